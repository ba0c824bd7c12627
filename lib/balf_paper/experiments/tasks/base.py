"""The task abstraction: what a sweep compresses, on which calibration data, and how it is scored.

A :class:`Task` is everything the sweep runner (:mod:`balf_paper.experiments.sweep.runner`)
needs and nothing about how it was loaded: the model, its calibration batches in the task's
*calibration form* (how a batch runs the model: ``forward``), one example input for whole-model
FLOP counts, and the evaluation, which returns :class:`Scores` (a dict of metrics). Its
:class:`TaskKind` names the metric reported first and its direction. Three kinds are registered:

- ``image-classification``: ``(images, labels)`` batches; ``accuracy`` (higher is better) and
  ``loss`` (:mod:`balf_paper.experiments.tasks.image`);
- ``language-modelling``: token windows ``{"input_ids": (B, L)}``; ``perplexity`` (lower is
  better) (:mod:`balf_paper.experiments.tasks.language`);
- ``sentence-similarity``: one tokenised sentence per batch; ``spearman`` (higher is better).

Further per-point metrics (e.g. zero-shot scores of a language model) are added with
:attr:`Task.extra_metrics`: each evaluator's dict is merged into every point's ``metrics``. An
evaluator with a ``complete(metrics) -> bool`` method says whether stored metrics already hold
its scores; the runner computes a stored point again when they do not (scores asked for later).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from balf.errors import BALFError

__all__ = [
    "Metric",
    "Scores",
    "Task",
    "TaskKind",
    "register_task_kind",
    "registered_task_kinds",
    "task_kind",
]


@dataclass(frozen=True)
class Metric:
    """A score and its direction.

    Example:
        >>> Metric("perplexity", higher_is_better=False).better(20.0, 25.0)
        True
    """

    name: str
    higher_is_better: bool

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    def to_dict(self) -> dict[str, Any]:
        """``{"name": …, "higher_is_better": …}`` (stored in ``results.json``)."""
        return {"name": self.name, "higher_is_better": self.higher_is_better}


@dataclass(frozen=True)
class Scores:
    """One evaluation: every metric by name (the task's metric among them), samples scored."""

    metrics: Mapping[str, Any]
    samples: int | None = None


@dataclass(frozen=True)
class TaskKind:
    """A kind of task: its metric and the form of its calibration batches (documentation)."""

    name: str
    metric: Metric
    calibration_form: str


_KINDS: dict[str, TaskKind] = {}


def register_task_kind(kind: TaskKind) -> TaskKind:
    """Register ``kind`` under its name (a sweep config's ``task``)."""
    _KINDS[kind.name] = kind
    return kind


def registered_task_kinds() -> dict[str, TaskKind]:
    """Every registered task kind by name."""
    return dict(_KINDS)


def task_kind(name: str) -> TaskKind:
    """The registered kind ``name`` (``BALFError`` naming the known ones)."""
    if name not in _KINDS:
        raise BALFError(f"unknown task {name!r}; choose one of {sorted(_KINDS)}")
    return _KINDS[name]


for _kind in (
    TaskKind("image-classification", Metric("accuracy", True), "(images, labels) batches"),
    TaskKind("language-modelling", Metric("perplexity", False), "{'input_ids': (B, L)} windows"),
    TaskKind("sentence-similarity", Metric("spearman", True), "one tokenised sentence per batch"),
):
    register_task_kind(_kind)


@dataclass
class Task:
    """What the sweep runner compresses and how it scores each point.

    Attributes:
        kind: a registered :class:`TaskKind` name.
        model: the uncompressed model (eval mode; not modified).
        evaluate: ``model -> Scores``.
        example_input: one batch for whole-model FLOP counts (run through ``forward``).
        calibration: calibration batches in the kind's form (``None``: data-free modes only).
        forward: ``forward(model, batch)`` runs a calibration batch (``None``: ``model(x)``
            on the batch's first element, balf's default).
        layers: names of the candidate layers (``None``: every supported layer).
        extra_metrics: further evaluators ``model -> {name: value}``, merged into each point's
            metrics (their names must not repeat the evaluation's); one with a
            ``complete(metrics)`` method marks stored points without its scores incomplete.
        evaluation_id: what the evaluation data is; tasks with equal ids share the uncompressed
            model's point (``None``: not shared beyond one runner).

    Example:
        >>> task = Task("image-classification", model, lambda m: Scores({"accuracy": 0.9}),
        ...             example_input=torch.randn(1, 3, 32, 32))  # doctest: +SKIP
    """

    kind: str
    model: nn.Module
    evaluate: Callable[[nn.Module], Scores]
    example_input: Any
    calibration: Iterable | None = None
    forward: Callable[[nn.Module, Any], Any] | None = None
    layers: list[str] | None = None
    extra_metrics: list[Callable[[nn.Module], Mapping[str, Any]]] = field(default_factory=list)
    evaluation_id: str | None = None

    def __post_init__(self) -> None:
        task_kind(self.kind)  # BALFError naming the known kinds

    @property
    def metric(self) -> Metric:
        """The metric reported first (tables, figures, matched reductions)."""
        return task_kind(self.kind).metric

    def is_complete(self, metrics: Mapping[str, Any]) -> bool:
        """Whether stored ``metrics`` hold every extra metric's scores (evaluators without a
        ``complete`` method are always satisfied)."""
        checks = [getattr(e, "complete", None) for e in self.extra_metrics]
        return all(check(metrics) for check in checks if check is not None)

    def extra_scores(self, model: nn.Module) -> dict[str, Any]:
        """The extra metrics of ``model`` alone (e.g. to complete a stored point)."""
        out: dict[str, Any] = {}
        for extra in self.extra_metrics:
            out.update(extra(model))
        return out

    def score(self, model: nn.Module) -> Scores:
        """``evaluate`` plus every extra metric.

        Raises:
            BALFError: the evaluation lacks the task's metric, or an extra metric repeats a name.
        """
        scores = self.evaluate(model)
        if self.metric.name not in scores.metrics:
            raise BALFError(
                f"a {self.kind} evaluation must report {self.metric.name!r}; it reported "
                f"{sorted(scores.metrics)}"
            )
        metrics = dict(scores.metrics)
        for extra in self.extra_metrics:
            more = dict(extra(model))
            clash = sorted(set(more) & set(metrics))
            if clash:
                raise BALFError(f"extra metric(s) {clash} repeat names already scored")
            metrics.update(more)
        return Scores(metrics, scores.samples)
