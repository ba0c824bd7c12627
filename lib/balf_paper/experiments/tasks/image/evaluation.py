"""Top-1 accuracy and cross-entropy of a classifier over a loader."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

__all__ = ["EvalResult", "evaluate"]


@dataclass(frozen=True)
class EvalResult:
    """Accuracy in [0, 1], mean cross-entropy loss, number of samples."""

    accuracy: float
    loss: float
    samples: int


def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    progress: bool = True,
    desc: str = "eval",
) -> EvalResult:
    """Evaluate ``model`` on ``(images (B, ...), labels (B,))`` batches, in eval mode.

    Under ``torch.distributed`` each process evaluates its own shard and the sums are reduced, so
    every process returns the result over the whole set.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    try:
        with torch.no_grad():
            for images, labels in tqdm(
                loader, desc=desc, unit="batch", disable=not progress, leave=False
            ):
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                logits = model(images).float()
                loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
                correct += (logits.argmax(1) == labels).sum().double()
                count += labels.numel()
    finally:
        model.train(was_training)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        totals = torch.stack([correct, loss_sum, count])
        dist.all_reduce(totals)
        correct, loss_sum, count = totals
    n = int(count.item())
    if n == 0:
        raise ValueError("the evaluation loader yielded no samples")
    return EvalResult(float(correct / count), float(loss_sum / count), n)
