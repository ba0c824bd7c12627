"""Figures of the side studies: calibration-set size, allocator iterations, corruptions.

Each ``plot_*`` function takes already-loaded results
(:mod:`balf_paper.experiments.render.loaders`), reads their points as
:class:`~balf_paper.experiments.sweep.points.ResultPoint`, draws one figure and writes it with
:func:`~balf_paper.experiments.render.plot_style.save_figure`; it returns the written paths.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

from balf.errors import BALFError
from balf_paper.experiments.render.plot_style import (
    columns,
    mode_style,
    ratio_styles,
    save_figure,
    shade,
)
from balf_paper.experiments.render.tables import corruption_table
from balf_paper.experiments.sweep.points import ResultPoint, compressed_of, original_of, read_points

__all__ = ["plot_calibration_size", "plot_corruption", "plot_n_iters"]

_LEGEND = {
    "fontsize": "small",
    "loc": "upper left",
    "bbox_to_anchor": (1.02, 1.0),
    "frameon": False,
}


def _run_mode(runs: Mapping[Any, Mapping[str, Any]]) -> str:
    for results in runs.values():
        return str(results.get("config", {}).get("mode", ""))
    return ""


def plot_calibration_size(
    runs: Mapping[int, Mapping[str, Any]],
    out_stem: str | Path,
    *,
    title: str | None = None,
    formats: Sequence[str] = ("pdf", "png"),
) -> list[Path]:
    """Accuracy vs calibration-set size (log scale), one line per keep-ratio knob.

    Args:
        runs: ``calib-size/calib<N>/results.json`` contents keyed by ``N``.
    """
    stored = {size: read_points(results) for size, results in runs.items()}
    series: dict[float, list[tuple[int, float]]] = {}
    for size, points in stored.items():
        for p in compressed_of(points):
            series.setdefault(p.knob, []).append((size, 100 * p.accuracy))
    if not series:
        raise BALFError("no calibration-size points to plot")
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    styles = ratio_styles(mode_style(_run_mode(runs)).color, list(series))
    for knob, style in styles.items():
        ax.plot(*columns(series[knob]), **style)
    base = next((b for b in map(original_of, stored.values()) if b), None)
    if base is not None:
        acc = 100 * base.accuracy
        ax.axhline(acc, color="black", linestyle="--", linewidth=1, label=f"original ({acc:.2f}%)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(runs), [str(size) for size in runs])
    ax.minorticks_off()
    ax.set_xlabel("calibration images")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.set_title(title or "")
    ax.legend(**_LEGEND)
    return save_figure(fig, out_stem, formats)


def _iteration_curves(
    runs: Mapping[int, Mapping[str, Any]], gap_floor: float
) -> tuple[dict[float, list[tuple[int, float]]], dict[float, list[tuple[int, float]]]]:
    """Per knob, ``(n_iters, relative budget gap)`` and ``(n_iters, accuracy %)`` pairs."""
    gaps: dict[float, list[tuple[int, float]]] = {}
    accs: dict[float, list[tuple[int, float]]] = {}
    for n, results in runs.items():
        for p in compressed_of(read_points(results)):
            accs.setdefault(p.knob, []).append((n, 100 * p.accuracy))
            if p.budget and p.achieved is not None:
                gap = abs(p.budget - p.achieved) / p.budget
                gaps.setdefault(p.knob, []).append((n, max(gap, gap_floor)))
    return gaps, accs


def plot_n_iters(
    runs: Mapping[int, Mapping[str, Any]],
    out_stem: str | Path,
    *,
    title: str | None = None,
    gap_floor: float = 1e-8,
    formats: Sequence[str] = ("pdf", "png"),
) -> list[Path]:
    """Relative budget gap and accuracy vs allocator iterations, one line per keep-ratio.

    The gap is ``(budget − achieved) / budget`` of each point (costs of the chosen layers),
    drawn on a log axis; gaps below ``gap_floor`` (e.g. exactly 0) are drawn at ``gap_floor``.

    Args:
        runs: ``n-iters/iters<N>/results.json`` contents keyed by ``N``.
    """
    gaps, accs = _iteration_curves(runs, gap_floor)
    if not accs:
        raise BALFError("no allocator-iteration points to plot")
    fig = Figure(figsize=(10.0, 3.8))
    ax_gap, ax_acc = fig.subplots(1, 2)
    styles = ratio_styles(mode_style(_run_mode(runs)).color, list(accs))
    for knob, style in styles.items():
        if knob in gaps:
            ax_gap.plot(*columns(gaps[knob]), **style)
        ax_acc.plot(*columns(accs[knob]), **style)
    if any(g <= gap_floor for curve in gaps.values() for _, g in curve):
        ax_gap.axhline(gap_floor, color="grey", linestyle=":", linewidth=1)
        ax_gap.annotate(
            f"gaps ≤ {gap_floor:g} drawn at {gap_floor:g}",
            (0.97, 0.96),
            xycoords="axes fraction",
            ha="right",
            va="top",
            fontsize="small",
            color="grey",
        )
    ax_gap.set_yscale("log")
    ax_gap.set_ylabel("relative budget gap (budget − achieved) / budget")
    ax_acc.set_ylabel("top-1 accuracy (%)")
    for ax in (ax_gap, ax_acc):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        ax.set_xlabel("allocator iterations")
        ax.grid(alpha=0.3, which="both")
    ax_acc.legend(**_LEGEND)
    fig.suptitle(title or "")
    fig.tight_layout()
    return save_figure(fig, out_stem, formats)


def plot_corruption(
    results_by_mode: Mapping[str, Mapping[str, Any]],
    out_stem: str | Path,
    *,
    title: str | None = None,
    formats: Sequence[str] = ("pdf", "png"),
) -> list[Path]:
    """Accuracy under corruption of the original and each compressed (mode, keep-ratio) model.

    Left: grouped bars of the accuracy per corruption (mean over severities), plus the clean
    accuracy and the overall mean. Right: accuracy vs severity, averaged over corruptions.

    Args:
        results_by_mode: ``corruption/<mode>/results.json`` contents keyed by mode.
    """
    table = corruption_table(results_by_mode)
    severity = _severity_curves(results_by_mode)
    if table.empty or not severity:
        raise BALFError("no corruption points to plot")
    colors = _variant_colors(results_by_mode)
    fig = Figure(figsize=(15.0, 4.6))
    ax_bar, ax_sev = fig.subplots(1, 2, gridspec_kw={"width_ratios": [4.5, 1]})
    n = len(table.columns)
    width = 0.85 / n
    for j, name in enumerate(table.columns):
        xs = [i + (j - (n - 1) / 2) * width for i in range(len(table.index))]
        ax_bar.bar(xs, table[name], width=width, color=colors[name], label=name, linewidth=0)
    ax_bar.set_xticks(range(len(table.index)), table.index, rotation=40, ha="right")
    ax_bar.set_ylabel("top-1 accuracy (%), mean over severities")
    ax_bar.set_xlim(-0.6, len(table.index) - 0.4)
    ax_bar.grid(axis="y", alpha=0.3)
    for name, curve in severity.items():
        xs, ys = columns(curve.items())
        style = "--" if name == "original" else "-"
        ax_sev.plot(xs, ys, style, marker="o", markersize=3, color=colors[name], label=name)
    ax_sev.set_xlabel("severity")
    ax_sev.set_ylabel("top-1 accuracy (%), mean over corruptions")
    ax_sev.grid(alpha=0.3)
    ax_sev.legend(**{**_LEGEND, "bbox_to_anchor": (1.04, 1.0)})
    fig.suptitle(title or "")
    fig.tight_layout()
    return save_figure(fig, out_stem, formats)


def _variants(
    results_by_mode: Mapping[str, Mapping[str, Any]],
) -> Iterator[tuple[str, str | None, tuple[int, int], ResultPoint]]:
    """``(column name, mode, (shade index, count), point)`` of the original and each
    compressed point (mode ``None`` for the original)."""
    seen_original = False
    for mode, results in results_by_mode.items():
        stored = read_points(results)
        base = original_of(stored)
        if base is not None and not seen_original:
            seen_original = True
            yield "original", None, (0, 1), base
        points = sorted(compressed_of(stored), key=lambda p: -p.knob)
        for i, p in enumerate(points):
            yield f"{mode_style(mode).label} {p.knob:g}", mode, (i, len(points)), p


def _variant_colors(results_by_mode: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    colors: dict[str, Any] = {}
    for name, mode, (i, n), _ in _variants(results_by_mode):
        if mode is None:
            colors[name] = "#404040"
        else:
            colors[name] = shade(mode_style(mode).color, 0.65 * i / max(n - 1, 1))
    return colors


def _severity_curves(
    results_by_mode: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[int, float]]:
    """Accuracy (%) per severity, averaged over corruptions, for each variant."""
    curves: dict[str, dict[int, float]] = {}
    for name, _, _, point in _variants(results_by_mode):
        by_severity: dict[int, list[float]] = {}
        for severities in (point.corrupted or {}).values():
            for s, acc in (severities or {}).items():
                if isinstance(acc, (int, float)):
                    by_severity.setdefault(int(s), []).append(100 * acc)
        if by_severity:
            curves[name] = {s: sum(v) / len(v) for s, v in by_severity.items()}
    return curves
