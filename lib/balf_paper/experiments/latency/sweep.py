"""The latency-budget sweep: per batch size, compress with latency and FLOPs budgets and time.

See :mod:`balf_paper.experiments.latency` for the experiment and its rows.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from balf.counting.flops import count_flops, count_params
from balf.errors import BudgetError
from balf.io.export import fold_batchnorm
from balf.pipeline.compressor import Compressor
from balf.pipeline.latency_loop import compress_to_latency
from balf.ranks.configs import BALFConfig
from balf.ranks.latency import LatencyTable
from balf.report import Report
from balf_paper.experiments.latency.measure import (
    LatencySubject,
    interleaved_latencies,
    predicted_ratio,
)

__all__ = ["run_latency_budgets"]

log = logging.getLogger(__name__)

_Variant = tuple[str, float, nn.Module, Report | None]
"""``(mode, requested ratio, model, report)``; the original has mode "original", no report."""


@dataclass
class _Run:
    """The state of one subject's sweep shared across batch sizes."""

    subject: LatencySubject
    model: nn.Module
    example: Tensor
    compressor: Compressor
    rank_multiple: int
    flops0: int
    params0: int
    iterations: int = 1
    tolerance: float = 0.02
    loop_rounds: int = 5
    loop_min_time: float = 1.0
    accuracy_of: dict[tuple, float | None] = field(default_factory=dict)
    flops_models: dict[float, tuple[nn.Module, Report]] = field(default_factory=dict)

    def variants(
        self, b: int, ratios: Sequence[float], rows: list[dict[str, Any]]
    ) -> list[_Variant]:
        """The original and every compressed model at batch size ``b``; unreachable latency
        budgets become skipped rows appended to ``rows``."""
        variants: list[_Variant] = [("original", 1.0, self.model, None)]
        for ratio in ratios:
            for mode in ("latency_auto", "flops_auto"):
                if mode == "flops_auto":
                    if ratio not in self.flops_models:
                        config = BALFConfig(ratio, metric="flops", rank_multiple=self.rank_multiple)
                        self.flops_models[ratio] = self.compressor.compress(config)
                    small, report = self.flops_models[ratio]
                else:
                    try:
                        small, report = compress_to_latency(
                            self.compressor, ratio, iterations=self.iterations,
                            tolerance=self.tolerance, rank_multiple=self.rank_multiple,
                            example=self.example, rounds=self.loop_rounds,
                            min_time=self.loop_min_time,
                        )  # fmt: skip
                    except BudgetError as exc:
                        log.warning("%s batch %d %s@%g: %s", self.subject.name, b, mode, ratio, exc)
                        rows.append(_skipped(self.subject, b, mode, ratio, str(exc)))
                        continue
                variants.append((mode, ratio, small, report))
        return variants

    def row(self, b: int, variant: _Variant, own: list[float], base_times: list[float],
            table: LatencyTable) -> dict[str, Any]:  # fmt: skip
        """The row of one timed variant (``own``: its seconds per round)."""
        mode, ratio, small, report = variant
        base = min(base_times)
        if report is None:
            row = _row(self.subject, b, mode, 1.0, 1.0, own, 1.0, 1.0, 1.0, None, None)
            row["median_ratio"] = 1.0
        else:
            key = tuple(sorted((n, r.rank) for n, r in report.layers.items() if r.factorized))
            if key not in self.accuracy_of:
                evaluate = self.subject.evaluate
                self.accuracy_of[key] = evaluate(small) if evaluate else None
            row = _row(
                self.subject, b, mode, ratio, predicted_ratio(table, report), own,
                min(own) / base, count_flops(small, self.example) / self.flops0,
                count_params(small) / self.params0, report, self.accuracy_of[key],
            )  # fmt: skip
            rounds = [t / t0 for t, t0 in zip(own, base_times, strict=True)]
            row["median_ratio"] = statistics.median(rounds)
            log.info(
                "%s batch %d %s@%g: measured %.3f, predicted %.3f, FLOPs %.3f",
                self.subject.name, b, mode, ratio, row["measured_ratio"],
                row["predicted_ratio"], row["flops_ratio"],
            )  # fmt: skip
        row["original_latency_s"] = base
        row["table_model_s"] = table.model
        if report is not None and report.latency_fit is not None:
            row["latency_fit"] = report.latency_fit
        return row


def _batch_input(example: Tensor, b: int) -> Tensor:
    """``example`` ``(1, ...)`` repeated to ``(b, ...)`` plus small noise seeded by ``b``."""
    x = example.expand(b, *example.shape[1:]).contiguous()
    return x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(b)).to(x)


def run_latency_budgets(
    subject: LatencySubject,
    ratios: Sequence[float],
    batch_sizes: Sequence[int],
    *,
    warmup: int = 2,
    repeats: int = 10,
    rank_multiple: int = 1,
    points: int = 12,
    min_run_time: float = 0.05,
    cache_dir: str | Path | None = None,
    min_time: float = 0.0,
    progress: bool = True,
    latency_iterations: int = 1,
    latency_tolerance: float = 0.02,
    loop_rounds: int = 5,
    loop_min_time: float = 1.0,
) -> list[dict[str, Any]]:
    """Rows for one model: every batch size × ratio × {latency_auto, flops_auto}.

    ``latency_auto`` runs :func:`balf.compress_to_latency` with ``latency_iterations``
    compressions at most (1: one allocation on the measured table, the open loop), stopping
    within ``latency_tolerance`` of the requested ratio; each step is timed in ``loop_rounds``
    interleaved rounds (and more until ``loop_min_time`` seconds), and the row keeps the loop's
    record (``latency_fit``). The row's ``measured_ratio`` is always measured anew, with every
    other variant of its batch size.

    At each batch size the original and every compressed model (BatchNorm folded) are timed in
    interleaved rounds (:func:`interleaved_latencies`). On a machine shared with other jobs,
    contention only ever adds time, so ``measured_ratio`` is the ratio of the *fastest* call of
    each (as ``timeit`` recommends); ``median_ratio`` is the median over rounds of the
    per-round ratio, ``latency_s`` the minimum and ``median_latency_s`` the median.
    """
    model = subject.model.eval()
    example = subject.example.to(next(model.parameters()).device)
    compressor = Compressor(model, subject.calibration, progress=progress)
    run = _Run(subject, model, example, compressor, rank_multiple,
               count_flops(model, example), count_params(model), latency_iterations,
               latency_tolerance, loop_rounds, loop_min_time)  # fmt: skip
    folded_original = fold_batchnorm(model, example)
    rows: list[dict[str, Any]] = []
    for b in batch_sizes:
        x = _batch_input(example, b)
        compressor.latency = {"batch_size": b, "rank_multiple": rank_multiple, "points": points,
                              "min_run_time": min_run_time, "cache_dir": cache_dir}  # fmt: skip
        table = compressor.latency_table(rank_multiple)
        variants = run.variants(b, ratios, rows)
        timed = [folded_original] + [fold_batchnorm(v[2], example) for v in variants[1:]]
        times = interleaved_latencies(timed, x, warmup, repeats, min_time)
        log.info("%s batch %d original: %.2f ms", subject.name, b, 1e3 * min(times[0]))
        rows += [run.row(b, v, own, times[0], table)
                 for v, own in zip(variants, times, strict=True)]  # fmt: skip
        del timed
    for row in rows:
        row["rank_multiple"] = rank_multiple
    if subject.evaluate is not None:
        accuracy0 = subject.evaluate(model)
        for row in rows:
            if row["mode"] == "original":
                row["accuracy"] = accuracy0
    return rows


def _skipped(subject, b, mode, requested, reason) -> dict[str, Any]:
    return {
        "model": subject.name,
        "batch_size": b,
        "mode": mode,
        "requested": requested,
        "skipped": reason,
        "accuracy": None,
    }


def _row(subject, b, mode, requested, predicted, times, measured, flops, params, report, acc):
    return {
        "model": subject.name,
        "batch_size": b,
        "mode": mode,
        "requested": requested,
        "predicted_ratio": predicted,
        "measured_ratio": measured,
        "latency_s": min(times),
        "median_latency_s": statistics.median(times),
        "latencies_s": times,
        "flops_ratio": flops,
        "params_ratio": params,
        "factorized_layers": (
            sum(r.factorized for r in report.layers.values()) if report is not None else 0
        ),
        "ranks": report.ranks if report is not None else {},
        "accuracy": acc,
    }
