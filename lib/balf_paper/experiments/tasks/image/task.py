"""Image classification as a :class:`~balf_paper.experiments.tasks.base.Task`: top-1 accuracy
(higher is better) and cross-entropy on ``(images, labels)`` batches; calibration on
``(images, labels)`` batches (the images are the model's input).

:func:`robustness_evaluation` scores a model on the clean set and every (corruption, severity)
set of the CIFAR-10-C layout as well: ``corrupted_accuracy`` (mean over all sets) and
``corrupted`` (``{corruption: {severity: accuracy}}``) join the point's metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from balf_paper.experiments.tasks.base import Scores, Task
from balf_paper.experiments.tasks.image.evaluation import evaluate

__all__ = ["IMAGE_CLASSIFICATION", "image_task", "robustness_evaluation"]

IMAGE_CLASSIFICATION = "image-classification"


def image_task(
    model: nn.Module,
    evaluation: Iterable,
    example_input: Tensor,
    *,
    calibration: Iterable | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    evaluate_fn: Callable[[nn.Module], Mapping[str, Any]] | None = None,
    evaluation_id: str | None = None,
) -> Task:
    """The image-classification task of ``model``.

    Args:
        model: the trained classifier ``(B, C, H, W) -> (B, K)``.
        evaluation: ``(images, labels)`` batches scored for accuracy and loss.
        example_input: one input ``(1, C, H, W)`` for whole-model FLOP counts.
        calibration: ``(images, labels)`` calibration batches (``None``: data-free modes only).
        evaluate_fn: replaces the evaluation: ``model -> {"accuracy", "loss", ...}`` (an
            ``eval_samples`` entry is the number of images scored).
        evaluation_id: identity of the evaluation data (shares the uncompressed point).
    """

    def scores(m: nn.Module) -> Scores:
        if evaluate_fn is not None:
            metrics = dict(evaluate_fn(m))
            return Scores(metrics, metrics.pop("eval_samples", None))
        r = evaluate(m, evaluation, device, progress=progress)
        return Scores({"accuracy": r.accuracy, "loss": r.loss}, r.samples)

    return Task(
        IMAGE_CLASSIFICATION, model, scores, example_input, calibration=calibration,
        evaluation_id=evaluation_id,
    )  # fmt: skip


def robustness_evaluation(
    clean: Iterable,
    corrupted: Mapping[tuple[str, int], Iterable],
    device: torch.device | str,
) -> Callable[[nn.Module], dict[str, Any]]:
    """``model -> metrics``: clean accuracy/loss plus the accuracy on every corrupted set.

    Args:
        clean: the clean test batches.
        corrupted: ``{(corruption, severity): batches}``.

    Returns:
        An ``evaluate_fn`` for :func:`image_task`: ``accuracy``, ``loss``,
        ``corrupted_accuracy`` (mean over all (corruption, severity) pairs), ``corrupted``
        (corruption -> severity as a string -> accuracy) and ``eval_samples``.
    """

    def robustness(model: nn.Module) -> dict[str, Any]:
        base = evaluate(model, clean, device, progress=False)
        per: dict[str, dict[str, float]] = {}
        for (c, s), loader in corrupted.items():
            per.setdefault(c, {})[str(s)] = evaluate(model, loader, device, progress=False).accuracy
        accs = [a for sev in per.values() for a in sev.values()]
        return {
            "accuracy": base.accuracy,
            "loss": base.loss,
            "corrupted_accuracy": sum(accs) / len(accs),
            "corrupted": per,
            "eval_samples": base.samples,
        }

    return robustness
