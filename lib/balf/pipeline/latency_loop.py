"""Latency budgets that land: allocate on the measured table, time the result, correct, repeat.

The latency table (:mod:`balf.ranks.latency.measure`) times every layer alone, on a random input,
warm in the caches; inside the model the same layers run cold, next to other operators, and a
factorized layer is two calls with an intermediate tensor between them. So the whole-model latency
that an allocation on the table *predicts* misses the one measured on the compressed model, by an
amount that depends on the model, the batch size and the machine. :func:`compress_to_latency`
closes the loop: it compresses at the requested ratio, times the compressed model against the
original (BatchNorm folded in both, interleaved rounds, median of the per-round ratios), and, while
the measured ratio is off by more than ``tolerance``, asks the allocator for a corrected ratio — a
secant step on ``requested ↦ measured`` (the first step assumes slope 1), regula falsi once two
steps bracket the target — for at most ``iterations`` compressions. It returns the compressed model
whose measured ratio came closest, and records every step in ``report.latency_fit``.

Example:
    >>> compressor = balf.Compressor(model, calib_loader, latency={"batch_size": 8})
    >>> small, report = balf.compress_to_latency(compressor, 0.7)
    >>> report.latency_fit["measured"][-1]
    0.71...
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from balf.errors import BALFError, BudgetError
from balf.ranks.configs import BALFConfig
from balf.report import Report

if TYPE_CHECKING:
    from balf.pipeline.compressor import Compressor

__all__ = ["LatencyFit", "compress_to_latency", "measured_latency_ratio"]

log = logging.getLogger(__name__)

#: Bounds on the secant slope ``d measured / d requested`` (a flat or inverted step is noise).
_SLOPE_BOUNDS = (0.25, 4.0)


@dataclass
class LatencyFit:
    """What the closed loop asked of the allocator and what it measured.

    Attributes:
        target: the requested whole-model latency ratio.
        requested: the ratio passed to the allocator at each step.
        predicted: the ratio the latency table predicted at each step.
        measured: the measured whole-model ratio at each step (median over interleaved rounds
            of the compressed model's call over the original's, see
            :func:`measured_latency_ratio`).
        chosen: index of the step whose model is returned (closest to ``target``).
        batch_size: the batch size timed.
        seconds: wall time of the loop (compressions and timings).
    """

    target: float
    requested: list[float] = field(default_factory=list)
    predicted: list[float] = field(default_factory=list)
    measured: list[float] = field(default_factory=list)
    chosen: int = -1
    batch_size: int = 1
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable."""
        return asdict(self)

    def next_request(self, lowest: float) -> float:
        """The next ratio to ask of the allocator, within ``[lowest, 1]``.

        Once two steps bracket the target (one measured below it, one above), regula falsi
        between the closest such pair, kept off the bracket's ends (a tenth of its width) so
        that a step response cannot stall it; before that a secant step on the last two steps,
        its slope ``d measured / d requested`` bounded to :data:`_SLOPE_BOUNDS` (the first step
        assumes slope 1).
        """
        steps = list(zip(self.requested, self.measured, strict=True))
        below = [(q, m) for q, m in steps if m < self.target]
        above = [(q, m) for q, m in steps if m > self.target]
        if below and above:
            (q_lo, m_lo), (q_hi, m_hi) = max(below), min(above)
            if q_lo < q_hi:
                width = q_hi - q_lo
                q = q_lo + (self.target - m_lo) * width / (m_hi - m_lo)
                return min(max(q, q_lo + 0.1 * width), q_hi - 0.1 * width)
        q, m = self.requested[-1], self.measured[-1]
        slope = 1.0
        if len(self.requested) >= 2:
            dq = q - self.requested[-2]
            dm = m - self.measured[-2]
            if dq != 0 and math.isfinite(dm / dq):
                slope = min(max(dm / dq, _SLOPE_BOUNDS[0]), _SLOPE_BOUNDS[1])
        return min(max(q + (self.target - m) / slope, lowest), 1.0)


def measured_latency_ratio(
    original: nn.Module,
    compressed: nn.Module,
    x: Tensor,
    *,
    rounds: int = 5,
    min_time: float = 0.0,
    max_rounds: int = 200,
) -> float:
    """Latency of ``compressed(x)`` over that of ``original(x)``: the median over rounds of
    the ratio of their calls in the round.

    The two are called in turn (one warm-up call each, then at least ``rounds`` rounds, and
    more until ``min_time`` seconds have passed, at most ``max_rounds``): a drift of the
    machine's load hits both calls of a round alike, and the median ignores the rounds that
    other work (or a clock glitch) disturbed.
    """
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    ratios: list[float] = []
    models = (original, compressed)
    with torch.inference_mode():
        for m in models:
            m(x)
        begin = time.perf_counter()

        def more() -> bool:
            if len(ratios) < max(rounds, 1):
                return True
            return time.perf_counter() - begin < min_time and len(ratios) < max_rounds

        while more():
            seconds = []
            for m in models:
                sync()
                start = time.perf_counter()
                m(x)
                sync()
                seconds.append(time.perf_counter() - start)
            ratios.append(seconds[1] / max(seconds[0], 1e-12))
    return statistics.median(ratios)


def _predicted(compressor: Compressor, report: Report, rank_multiple: int) -> float:
    table = compressor.latency_table(rank_multiple)
    seconds = table.fixed
    for name, layer in report.layers.items():
        lat = table.layers[name]
        seconds += float(lat.lowrank_at(layer.rank)) if layer.factorized else lat.dense
    return seconds / (table.fixed + sum(lat.dense for lat in table.layers.values()))


def compress_to_latency(
    compressor: Compressor,
    ratio: float,
    *,
    iterations: int = 4,
    tolerance: float = 0.02,
    rank_multiple: int = 1,
    n_iters: int = 300,
    rounds: int = 5,
    min_time: float = 1.0,
    fold_bn: bool = True,
    example: Tensor | None = None,
    measure: Callable[[nn.Module, nn.Module, Tensor], float] | None = None,
) -> tuple[nn.Module, Report]:
    """Compress to a measured whole-model latency ratio (see the module docstring).

    Args:
        compressor: a :class:`balf.Compressor` with calibration data; its ``latency`` options
            (``batch_size`` …) or table set the batch size timed.
        ratio: the whole-model latency keep-ratio to reach, in ``(0, 1]``.
        iterations: compressions at most (1: the open loop, one allocation on the table).
        tolerance: stop once ``|measured − ratio| ≤ tolerance · ratio``.
        rank_multiple, n_iters: as in :class:`balf.BALFConfig`.
        rounds, min_time: timing rounds per step (see :func:`measured_latency_ratio`).
        fold_bn: time both models with BatchNorm folded (as the latency table's model time).
        example: one input ``(1, ...)`` (default: the calibration statistics' example).
        measure: ``measure(original, compressed, x) -> ratio`` to replace the timing.

    Returns:
        ``(model, report)`` of the step closest to ``ratio``; ``report.latency_fit`` is the
        :class:`LatencyFit` as a dict.

    Raises:
        BudgetError: ``ratio`` is below what the measured layers allow.
    """
    from balf.io.export import fold_batchnorm

    if not 0 < ratio <= 1:
        raise BALFError(f"ratio must be in (0, 1], got {ratio!r}")
    if iterations < 1:
        raise BALFError(f"iterations must be at least 1, got {iterations!r}")
    start = time.perf_counter()
    table = compressor.latency_table(rank_multiple)
    batch = int(table.key.get("batch_size", 1))
    if example is None:
        example = compressor.statistics.example_input
    if not isinstance(example, Tensor):
        raise BALFError("compress_to_latency needs one tensor example input (pass example=)")
    device = next(compressor.model.parameters()).device
    x = example[:1].to(device)
    x = x.expand(batch, *x.shape[1:]).contiguous()
    fold = (lambda m: fold_batchnorm(m, x[:1])) if fold_bn else (lambda m: m)
    original = fold(compressor.model.eval())
    timing = measure or (lambda a, b, inp: measured_latency_ratio(a, b, inp, rounds=rounds,
                                                                  min_time=min_time))  # fmt: skip
    fit = LatencyFit(target=ratio, batch_size=batch)
    best: tuple[float, nn.Module, Report] | None = None
    request, lowest = ratio, 1e-6
    for _ in range(iterations):
        config = BALFConfig(request, metric="latency", n_iters=n_iters, rank_multiple=rank_multiple)
        try:
            small, report = compressor.compress(config)
        except BudgetError:
            if not fit.requested:
                raise
            lowest = request + (fit.requested[-1] - request) / 2  # unreachable: back off
            request = fit.next_request(lowest)
            continue
        measured = timing(original, fold(small), x)
        fit.requested.append(request)
        fit.predicted.append(_predicted(compressor, report, rank_multiple))
        fit.measured.append(measured)
        log.info("latency loop: requested %.4f → measured %.4f (target %.4f)", request,
                 measured, ratio)  # fmt: skip
        if best is None or abs(measured - ratio) < abs(best[0] - ratio):
            best = (measured, small, report)
            fit.chosen = len(fit.measured) - 1
        del small
        if abs(measured - ratio) <= tolerance * ratio:
            break
        following = fit.next_request(lowest)
        if any(abs(following - q) < 1e-4 for q in fit.requested):  # nothing new to try
            break
        request = following
    fit.seconds = time.perf_counter() - start
    if best is None:
        raise BudgetError(f"no latency budget near {ratio:g} could be allocated")
    _, small, report = best
    report.latency_fit = fit.to_dict()
    return small, report
