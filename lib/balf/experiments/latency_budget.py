"""Latency budgets measured end to end (the latency mode of ``scripts/imagenet/measure_speed.py``).

For each model and batch size: the chosen layers' latency table is measured at that batch size
(:func:`balf.latency.measure_latency`), the model is compressed with a latency budget
(``latency_auto``) and, for comparison, with a FLOPs budget (``flops_auto``) at every requested
keep-ratio, and the original and every compressed model are timed end to end with BatchNorm
folded into the convolutions (:func:`balf.export.fold_batchnorm`, both sides alike). Each row
records the requested ratio, the ratio the latency table predicts and the measured one; for
models with an evaluation set (the trained Fashion-MNIST ResNets) also the accuracy, so the two
budgets can be compared at matched *measured* latency.

Rows (``latency_<device>.json``): ``model``, ``batch_size``, ``mode``, ``requested``,
``predicted_ratio``, ``measured_ratio`` (fastest compressed / fastest original call over
interleaved rounds), ``median_ratio`` (median of the per-round ratios), ``latency_s`` (fastest),
``median_latency_s``, ``latencies_s``, ``original_latency_s`` (fastest), ``table_model_s``,
``flops_ratio``, ``params_ratio``, ``factorized_layers``, ``ranks``, ``accuracy`` (or ``None``),
``rank_multiple``.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from ..api import Compressor
from ..config import BALFConfig
from ..errors import BudgetError
from ..export import fold_batchnorm
from ..flops import count_flops, count_params
from ..latency import LatencyTable
from ..report import Report
from .plots import save_figure

__all__ = [
    "TOLERANCE",
    "LatencySubject",
    "accuracy_table",
    "interleaved_latencies",
    "plot_latency",
    "predicted_ratio",
    "ratio_table",
    "summary_table",
    "run_latency_budgets",
]

log = logging.getLogger(__name__)

TOLERANCE = 0.05
"""Target: measured latency ratio within 5% (relative) of the requested one."""


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
    round alike."""
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
) -> list[dict[str, Any]]:
    """Rows for one model: every batch size × ratio × {latency_auto, flops_auto}.

    At each batch size the original and every compressed model (BatchNorm folded) are timed in
    interleaved rounds (:func:`interleaved_latencies`). On a machine shared with other jobs,
    contention only ever adds time, so ``measured_ratio`` is the ratio of the *fastest* call of
    each (as ``timeit`` recommends); ``median_ratio`` is the median over rounds of the
    per-round ratio, ``latency_s`` the minimum and ``median_latency_s`` the median.
    """
    model = subject.model.eval()
    device = next(model.parameters()).device
    example = subject.example.to(device)
    compressor = Compressor(model, subject.calibration, progress=progress)
    flops0, params0 = count_flops(model, example), count_params(model)
    folded_original = fold_batchnorm(model, example)
    accuracy_of: dict[tuple, float | None] = {}
    flops_models: dict[float, tuple[nn.Module, Report]] = {}
    rows: list[dict[str, Any]] = []
    for b in batch_sizes:
        x = example.expand(b, *example.shape[1:]).contiguous()
        x = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(b)).to(x)
        compressor.latency = {
            "batch_size": b,
            "rank_multiple": rank_multiple,
            "points": points,
            "min_run_time": min_run_time,
            "cache_dir": cache_dir,
        }
        table = compressor.latency_table(rank_multiple)
        variants: list[tuple[str, float, nn.Module | None, Report | None]] = [
            ("original", 1.0, model, None)
        ]
        timed: list[nn.Module] = [folded_original]
        for ratio in ratios:
            for mode in ("latency_auto", "flops_auto"):
                if mode == "flops_auto":
                    if ratio not in flops_models:
                        config = BALFConfig(ratio, metric="flops", rank_multiple=rank_multiple)
                        flops_models[ratio] = compressor.compress(config)
                    small, report = flops_models[ratio]
                else:
                    config = BALFConfig(ratio, metric="latency", rank_multiple=rank_multiple)
                    try:
                        small, report = compressor.compress(config)
                    except BudgetError as exc:
                        log.warning("%s batch %d %s@%g: %s", subject.name, b, mode, ratio, exc)
                        rows.append(_skipped(subject, b, mode, ratio, str(exc)))
                        continue
                variants.append((mode, ratio, small, report))
                timed.append(fold_batchnorm(small, example))
        times = interleaved_latencies(timed, x, warmup, repeats, min_time)
        base_times = times[0]
        base = min(base_times)
        log.info("%s batch %d original: %.2f ms", subject.name, b, 1e3 * base)
        for (mode, ratio, small, report), own in zip(variants, times, strict=True):
            ratio_rounds = [t / t0 for t, t0 in zip(own, base_times, strict=True)]
            if report is None:
                row = _row(subject, b, mode, 1.0, 1.0, own, 1.0, 1.0, 1.0, None, None)
                row["median_ratio"] = 1.0
            else:
                key = tuple(sorted((n, r.rank) for n, r in report.layers.items() if r.factorized))
                if key not in accuracy_of:
                    accuracy_of[key] = subject.evaluate(small) if subject.evaluate else None
                row = _row(
                    subject,
                    b,
                    mode,
                    ratio,
                    predicted_ratio(table, report),
                    own,
                    min(own) / base,
                    count_flops(small, example) / flops0,
                    count_params(small) / params0,
                    report,
                    accuracy_of[key],
                )
                row["median_ratio"] = statistics.median(ratio_rounds)
                log.info(
                    "%s batch %d %s@%g: measured %.3f, predicted %.3f, FLOPs %.3f",
                    subject.name, b, mode, ratio, row["measured_ratio"],
                    row["predicted_ratio"], row["flops_ratio"],
                )  # fmt: skip
            row["original_latency_s"] = base
            row["table_model_s"] = table.model
            rows.append(row)
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


def _done(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if not r.get("skipped")]


def _ordered(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by model (first appearance), batch size, then decreasing requested ratio."""
    models = {m: i for i, m in enumerate(dict.fromkeys(r["model"] for r in rows))}
    return sorted(rows, key=lambda r: (models[r["model"]], r["batch_size"], -r["requested"]))


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


# -- rendering ----------------------------------------------------------------------------------


def _within(row: dict[str, Any]) -> bool:
    return abs(row["measured_ratio"] / row["requested"] - 1) <= TOLERANCE


def ratio_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: requested vs predicted vs measured latency ratio, both budgets."""
    lines = [
        "Latency budget vs FLOPs budget at the same keep-ratio: whole-model latency ratio "
        "(compressed / original, BatchNorm folded; fastest of interleaved timing rounds).",
        "",
        "| model | batch | requested | latency budget: predicted | latency budget: measured "
        "| within 5% | FLOPs budget: measured | FLOPs budget: FLOPs ratio |",
        "|---|--:|--:|--:|--:|:-:|--:|--:|",
    ]
    by_key = {(r["model"], r["batch_size"], r["mode"], r["requested"]): r for r in _done(rows)}
    for r in _ordered(rows):
        if r["mode"] != "latency_auto":
            continue
        if r.get("skipped"):
            lines.append(
                f"| {r['model']} | {r['batch_size']} | {r['requested']:.2f} | unreachable: "
                "below what the measured layers allow | | | | |"
            )
            continue
        f = by_key.get((r["model"], r["batch_size"], "flops_auto", r["requested"]))
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['requested']:.2f} | "
            f"{r['predicted_ratio']:.3f} | {r['measured_ratio']:.3f} | "
            f"{'yes' if _within(r) else 'no'} | "
            f"{f['measured_ratio']:.3f} | {f['flops_ratio']:.3f} |"
            if f
            else f"| {r['model']} | {r['batch_size']} | {r['requested']:.2f} | "
            f"{r['predicted_ratio']:.3f} | {r['measured_ratio']:.3f} | "
            f"{'yes' if _within(r) else 'no'} | | |"
        )
    return "\n".join(lines) + "\n"


def _flops_accuracy_at(rows, model, b, measured) -> float | None:
    pts = sorted(
        (r["measured_ratio"], r["accuracy"])
        for r in _done(rows)
        if r["model"] == model
        and r["batch_size"] == b
        and r["mode"] in ("flops_auto", "original")
        and r["accuracy"] is not None
    )
    if len(pts) < 2 or not pts[0][0] <= measured <= pts[-1][0]:
        return None
    xs, ys = zip(*pts, strict=True)
    return float(np.interp(measured, xs, ys))


def accuracy_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: accuracy of the latency budget vs the FLOPs budget at the same measured
    latency (FLOPs-budget accuracy interpolated linearly in the measured ratio)."""
    lines = [
        "Accuracy (%) at matched measured latency: each latency-budget point against the "
        "FLOPs-budget curve interpolated at the same measured latency ratio.",
        "",
        "| model | batch | requested | measured ratio | latency budget | FLOPs budget at that "
        "latency | difference (pp) |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in _ordered(_done(rows)):
        if r["mode"] != "latency_auto" or r["accuracy"] is None:
            continue
        other = _flops_accuracy_at(rows, r["model"], r["batch_size"], r["measured_ratio"])
        other_s = f"{100 * other:.2f}" if other is not None else "n/a (outside range)"
        diff_s = f"{100 * (r['accuracy'] - other):+.2f}" if other is not None else ""
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['requested']:.2f} | "
            f"{r['measured_ratio']:.3f} | {100 * r['accuracy']:.2f} | {other_s} | {diff_s} |"
        )
    return "\n".join(lines) + "\n"


def summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown, one line per model and batch size: requested vs measured latency ratios of
    both budgets, how many latency-budget points are within 5%, and (models with accuracy) the
    latency budget's accuracy minus the FLOPs budget's at the same measured latency."""
    lines = [
        "Requested keep-ratio vs measured whole-model latency ratio (BatchNorm folded, fastest "
        "of interleaved rounds); '—' = budget below what the measured layers allow.",
        "",
        "| model | batch | requested | measured, latency budget | within 5% | measured, FLOPs "
        "budget | accuracy Δ at matched latency (pp) |",
        "|---|--:|---|---|:-:|---|---|",
    ]
    keys = list(dict.fromkeys((r["model"], r["batch_size"]) for r in rows))
    done = _done(rows)
    for model, b in keys:
        lat = [r for r in _ordered(rows) if (r["model"], r["batch_size"], r["mode"]) == (model, b,
               "latency_auto")]  # fmt: skip
        flops = {r["requested"]: r for r in done if (r["model"], r["batch_size"], r["mode"]) == (
            model, b, "flops_auto")}  # fmt: skip
        requested = " / ".join(f"{r['requested']:g}" for r in lat)
        measured = " / ".join(
            "—" if r.get("skipped") else f"{r['measured_ratio']:.2f}" for r in lat
        )
        hits = sum(1 for r in lat if not r.get("skipped") and _within(r))
        f_measured = " / ".join(
            f"{flops[r['requested']]['measured_ratio']:.2f}" if r["requested"] in flops else "—"
            for r in lat
        )
        deltas = []
        for r in lat:
            other = None
            if not r.get("skipped") and r["accuracy"] is not None:
                other = _flops_accuracy_at(rows, model, b, r["measured_ratio"])
            deltas.append("—" if other is None else f"{100 * (r['accuracy'] - other):+.2f}")
        delta = " / ".join(deltas) if any(d != "—" for d in deltas) else "n/a"
        lines.append(
            f"| {model} | {b} | {requested} | {measured} | {hits}/{len(lat)} | {f_measured} | "
            f"{delta} |"
        )
    return "\n".join(lines) + "\n"


def plot_latency(rows: Sequence[dict[str, Any]], stem: Path, title: str = "") -> list[Path]:
    """Measured vs requested latency ratio (top), accuracy vs measured ratio (bottom, models
    with accuracy), one panel per model, one colour per batch size."""
    rows = _done(rows)
    models = list(dict.fromkeys(r["model"] for r in rows))
    with_acc = [
        m for m in models if any(r["accuracy"] is not None for r in rows if r["model"] == m)
    ]
    n_rows = 2 if with_acc else 1
    fig = Figure(figsize=(4.0 * len(models), 3.6 * n_rows))
    axes = fig.subplots(n_rows, len(models), squeeze=False)
    colours = {}
    for j, name in enumerate(models):
        ax = axes[0][j]
        ax.plot([0.2, 1], [0.2, 1], "k--", lw=1, label="requested (y = x)")
        ax.fill_between(
            [0.2, 1], [0.2 * 0.95, 0.95], [0.2 * 1.05, 1.05], color="k", alpha=0.08, label="±5%"
        )
        mine = [r for r in rows if r["model"] == name]
        for b in sorted({r["batch_size"] for r in mine}):
            colour = colours.setdefault(b, f"C{len(colours)}")
            for mode, style in (("latency_auto", "o-"), ("flops_auto", "s:")):
                pts = sorted(
                    (r["requested"], r["measured_ratio"])
                    for r in mine
                    if r["batch_size"] == b and r["mode"] == mode
                )
                if pts:
                    label = f"batch {b}, {'latency' if mode == 'latency_auto' else 'FLOPs'} budget"
                    ax.plot(*zip(*pts, strict=True), style, color=colour, ms=4, label=label)
        ax.set_title(name)
        ax.set_xlabel("requested keep-ratio")
        ax.set_ylabel("measured latency ratio")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        if n_rows == 2:
            ax = axes[1][j]
            if name not in with_acc:
                ax.set_visible(False)
                continue
            for b in sorted({r["batch_size"] for r in mine}):
                for mode, style in (("latency_auto", "o-"), ("flops_auto", "s:")):
                    pts = sorted(
                        (r["measured_ratio"], 100 * r["accuracy"])
                        for r in mine
                        if r["batch_size"] == b and r["mode"] in (mode, "original")
                    )
                    label = f"batch {b}, {'latency' if mode == 'latency_auto' else 'FLOPs'} budget"
                    ax.plot(*zip(*pts, strict=True), style, color=colours[b], ms=4, label=label)
            ax.set_xlabel("measured latency ratio")
            ax.set_ylabel("accuracy (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, stem)
