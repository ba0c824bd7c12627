"""Timing for the latency-budget experiment: the subject, interleaved rounds, predicted ratios.

See :mod:`balf_paper.experiments.latency` for the experiment and its rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from balf.ranks.latency import LatencyTable
from balf.report import Report

__all__ = ["LatencySubject", "interleaved_latencies", "predicted_ratio"]


@dataclass
class LatencySubject:
    """A model to measure: its calibration data, one example input ``(1, ...)`` and, where
    there is one, an ``evaluate(model) -> accuracy`` function."""

    name: str
    model: nn.Module
    calibration: Any
    example: Tensor
    evaluate: Callable[[nn.Module], float] | None = None


def predicted_ratio(table: LatencyTable, report: Report) -> float:
    """End-to-end latency ratio the table predicts for a compressed model (any budget)."""
    seconds = table.fixed
    for name, layer in report.layers.items():
        t = table.layers[name]
        seconds += float(t.lowrank_at(layer.rank)) if layer.factorized else t.dense
    return seconds / (table.fixed + sum(t.dense for t in table.layers.values()))


def interleaved_latencies(
    models: Sequence[nn.Module],
    x: Tensor,
    warmup: int,
    repeats: int,
    min_time: float = 0.0,
    max_rounds: int = 200,
) -> list[list[float]]:
    """Seconds of timing rounds, each timing every model once in turn, after ``warmup``
    untimed rounds: at least ``repeats`` rounds, and more (up to ``max_rounds``) until
    ``min_time`` seconds have been spent. A drift of the machine's load hits all models of a
    round alike.

    Args:
        models: the models to time, each called as ``model(x)``.
        x: the input batch ``(B, ...)``.

    Returns:
        ``times[i][r]``: seconds of model ``i`` in round ``r``.
    """
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for _ in range(warmup):
            for m in models:
                m(x)
        begin = time.perf_counter()
        rounds = 0
        while rounds < max(repeats, 1) or (
            time.perf_counter() - begin < min_time and rounds < max_rounds
        ):
            for i, m in enumerate(models):
                sync()
                start = time.perf_counter()
                m(x)
                sync()
                times[i].append(time.perf_counter() - start)
            rounds += 1
    return times
