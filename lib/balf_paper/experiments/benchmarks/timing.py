"""Wall-clock timing of forward passes, synchronised with the device."""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from balf.calibration.batches import iter_batches

__all__ = ["forward_pass", "latencies", "sync", "warmup"]


def sync(device: torch.device) -> None:
    """Wait for the queued work of ``device`` (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_pass(
    model: nn.Module, data: Tensor | Iterable, device: torch.device, batch_size: int
) -> float:
    """Seconds of one plain forward pass over ``data`` (eval, no grad, no hooks).

    Args:
        data: images ``(N, 3, S, S)`` (split into ``batch_size`` batches) or an iterable of
            batches (as ``balf.calibration.batches.iter_batches`` accepts).
    """
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for x in iter_batches(data, device, batch_size):
            model(x)
    sync(device)
    return time.perf_counter() - start


def warmup(model: nn.Module, data, device: torch.device, batch_size: int, n: int) -> None:
    """Run the first ``n`` batches of ``data`` through ``model`` untimed."""
    with torch.no_grad():
        for i, x in enumerate(iter_batches(data, device, batch_size)):
            if i >= n:
                break
            model(x)
    sync(device)


def latencies(
    model: nn.Module, x: Tensor, warmup: int, repeats: int, device: torch.device
) -> list[float]:
    """Seconds of ``repeats`` timed forward calls on ``x`` after ``warmup`` untimed ones.

    Args:
        model: the network, in eval mode on ``device``.
        x: an input batch ``(B, 3, S, S)`` on ``device``.
    """
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        sync(device)
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            sync(device)
            out.append(time.perf_counter() - start)
    return out
