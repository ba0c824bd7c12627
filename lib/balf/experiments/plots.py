"""Figures of the experiments, rendered only from stored results.

Each ``plot_*`` function takes already-loaded results (see :mod:`balf.experiments.tables` for
the loaders), draws one figure with matplotlib's object API on an Agg canvas (no ``pyplot``, no
global backend switch) and writes it as PDF (for papers) and PNG (for the README), each through
a temporary file in the target folder and an ``os.replace``. They return the written paths.
PDFs carry no creation date, so rerunning on the same results rewrites identical files.

Modes keep the same colour and marker in every figure (:func:`mode_style`, declared with each
config class: :class:`balf.modes.ModeDisplay`); BALF's two modes are drawn thicker and on
top. Other works' published points (:func:`load_other_works`) are overlaid on the
accuracy-vs-ratio plots at ``ratio = 1 + delta_quantity_pct/100`` and ``accuracy = our
original accuracy + delta_top1_pp`` — only on the plot of the quantity they report, and only
for the same dataset and model name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.colors as mcolors
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

from .._io import _umask
from ..errors import BALFError
from ..modes import ModeDisplay, registered_modes
from .labels import dataset_label, other_works_source
from .tables import compressed_points, corruption_table, original_point

__all__ = [
    "ModeStyle",
    "load_other_works",
    "mode_style",
    "plot_accuracy_vs_ratio",
    "plot_calibration_size",
    "plot_corruption",
    "plot_n_iters",
    "save_figure",
]

log = logging.getLogger(__name__)

QUANTITY_LABELS = {"flops": "FLOPs keep-ratio", "params": "parameter keep-ratio"}


ModeStyle = ModeDisplay
"""How a mode is drawn (label, colour, marker, emphasised); an alias of ``ModeDisplay``."""

_WORK_MARKERS = ("*", "P", "X", "d", "H", "8", "p", "<", ">", "v")
_WORK_COLORS = ("#000000", "#e6550d", "#31a354", "#756bb1", "#636363", "#d6616b", "#3182bd")


def mode_style(mode: str) -> ModeStyle:
    """The style of ``mode``; unknown modes get a grey dotted look with a stable marker."""
    spec = registered_modes().get(mode)
    if spec is not None:
        return spec.display
    marker = _WORK_MARKERS[sum(map(ord, mode)) % len(_WORK_MARKERS)]
    return ModeStyle(mode, "#525252", marker)


def _shade(color: str, fraction: float) -> tuple[float, float, float]:
    """``color`` mixed with white: ``fraction`` 0 → the colour, 1 → white."""
    r, g, b = mcolors.to_rgb(color)
    return (r + (1 - r) * fraction, g + (1 - g) * fraction, b + (1 - b) * fraction)


def _columns(pairs: Iterable[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Sorted ``(x, y)`` pairs as an x list and a y list."""
    ordered = sorted(pairs)
    return [x for x, _ in ordered], [y for _, y in ordered]


_RATIO_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _ratio_styles(color: str, knobs: Sequence[float]) -> dict[float, dict[str, Any]]:
    """Per keep-ratio line style: the mode colour, lighter and another marker for lower ratios."""
    knobs = sorted(knobs, reverse=True)
    return {
        k: {
            "color": _shade(color, 0.6 * i / max(len(knobs) - 1, 1)),
            "marker": _RATIO_MARKERS[i % len(_RATIO_MARKERS)],
            "markersize": 5,
            "label": f"keep-ratio {k:g}",
        }
        for i, k in enumerate(knobs)
    }


def save_figure(
    fig: Figure, out_stem: str | Path, formats: Sequence[str] = ("pdf", "png"), dpi: int = 150
) -> list[Path]:
    """Write ``fig`` to ``<out_stem>.<fmt>`` for each format, atomically; return the paths."""
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    paths = []
    for fmt in formats:
        path = out_stem.with_name(f"{out_stem.name}.{fmt}")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".{fmt}")
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; use the usual mode
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        try:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        paths.append(path)
    return paths


def load_other_works(path: str | Path) -> pd.DataFrame:
    """Other works' published points, e.g. the repository's ``data/other_works.csv``.

    Columns: ``work``, ``method``, ``dataset``, ``model``, ``reduced_quantity``,
    ``delta_quantity_pct``, ``delta_top1_pp`` (and any others, ignored).
    """
    return pd.read_csv(path)


def _work_points(
    works: pd.DataFrame | None, dataset: str, model: str, quantity: str
) -> pd.DataFrame:
    if works is None or works.empty:
        return pd.DataFrame()
    keep = (
        (works["dataset"] == dataset)
        & (works["model"] == model)
        & (works["reduced_quantity"] == quantity)
    )
    return works[keep]


def _draw_other_works(
    ax: Axes, points: pd.DataFrame, base_accuracy: float, release: str | None = None
) -> None:
    """Scatter other works' points, one marker/colour per (work, method), labelled by method.

    ``release`` names the data the works report on when it is not ours (e.g. "original
    CIFAR-10"); the legend then says so.
    """
    if points.empty:
        return
    groups = list(points.groupby(["work", "method"], sort=False))
    methods = [m for (_, m), _ in groups]
    for i, ((work, method), g) in enumerate(groups):
        label = method if methods.count(method) == 1 else f"{method} [{work.split(':')[0][:28]}]"
        ax.scatter(
            1 + g["delta_quantity_pct"] / 100,
            base_accuracy + g["delta_top1_pp"],
            marker=_WORK_MARKERS[i % len(_WORK_MARKERS)],
            color=_WORK_COLORS[i % len(_WORK_COLORS)],
            s=55,
            zorder=5,
            label=f"{label} (reported{f', {release}' if release else ''})",
        )
    below = int((base_accuracy + points["delta_top1_pp"] < 0).sum())
    if below:
        log.info("%d other-work points fall below 0%% accuracy on our base; not shown", below)
    ax.set_ylim(bottom=max(ax.get_ylim()[0], 0.0))


def plot_accuracy_vs_ratio(
    results_by_mode: Mapping[str, Mapping[str, Any]],
    quantity: str,
    out_stem: str | Path,
    *,
    dataset: str | None = None,
    model: str | None = None,
    other_works: pd.DataFrame | None = None,
    modes: Sequence[str] | None = None,
    formats: Sequence[str] = ("pdf", "png"),
) -> list[Path]:
    """Top-1 accuracy vs whole-model FLOPs (or params) keep-ratio, one line per mode.

    Args:
        results_by_mode: ``results.json`` contents keyed by mode.
        quantity: ``"flops"`` or ``"params"`` (x axis: ``<quantity>_ratio`` of the points).
        out_stem: output path without extension.
        dataset, model: title, and selection of ``other_works`` rows.
        other_works: table of :func:`load_other_works`; ``None`` for no overlay.
        modes: draw only these modes (default: all given).
        formats: file formats to write.

    Returns:
        The written files.

    Example:
        >>> sweeps = load_mode_results("results/cifar10/resnet20")  # doctest: +SKIP
        >>> works = load_other_works("data/other_works.csv")  # doctest: +SKIP
        >>> plot_accuracy_vs_ratio(sweeps, "flops", "figures/accuracy_vs_flops",
        ...                        dataset="cifar10", model="resnet20",
        ...                        other_works=works)  # doctest: +SKIP
        [PosixPath('figures/accuracy_vs_flops.pdf'), PosixPath('figures/accuracy_vs_flops.png')]
    """
    if quantity not in QUANTITY_LABELS:
        raise BALFError(f"quantity must be one of {sorted(QUANTITY_LABELS)}, not {quantity!r}")
    selected = {m: r for m, r in results_by_mode.items() if modes is None or m in modes}
    if not selected:
        raise BALFError("no results to plot (check the modes filter)")
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    base = None
    for mode, results in selected.items():
        style = mode_style(mode)
        pts = [p for p in compressed_points(results) if p.get(f"{quantity}_ratio") is not None]
        pts.sort(key=lambda p: p[f"{quantity}_ratio"])
        ax.plot(
            [p[f"{quantity}_ratio"] for p in pts],
            [100 * p["accuracy"] for p in pts],
            color=style.color,
            marker=style.marker,
            markersize=6 if style.emphasised else 4,
            linewidth=2.4 if style.emphasised else 1.2,
            alpha=1.0 if style.emphasised else 0.85,
            zorder=4 if style.emphasised else 3,
            label=style.label,
        )
        base = base or original_point(results)
    if base is not None:
        acc = 100 * base["accuracy"]
        ax.axhline(acc, color="black", linestyle="--", linewidth=1, label=f"original ({acc:.2f}%)")
        if dataset and model:
            works_dataset, works_model, release = other_works_source(dataset, model)
            points = _work_points(other_works, works_dataset, works_model, quantity)
            _draw_other_works(ax, points, acc, release)
    ax.set_xlabel(f"{QUANTITY_LABELS[quantity]} (compressed / original)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_xlim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.set_title(" / ".join(x for x in (dataset and dataset_label(dataset), model) if x))
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return save_figure(fig, out_stem, formats)


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
    series: dict[float, list[tuple[int, float]]] = {}
    for size, results in runs.items():
        for p in compressed_points(results):
            series.setdefault(p["knob"], []).append((size, 100 * p["accuracy"]))
    if not series:
        raise BALFError("no calibration-size points to plot")
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    styles = _ratio_styles(mode_style(_run_mode(runs)).color, list(series))
    for knob, style in styles.items():
        ax.plot(*_columns(series[knob]), **style)
    base = next((b for b in map(original_point, runs.values()) if b), None)
    if base is not None:
        acc = 100 * base["accuracy"]
        ax.axhline(acc, color="black", linestyle="--", linewidth=1, label=f"original ({acc:.2f}%)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(runs), [str(size) for size in runs])
    ax.minorticks_off()
    ax.set_xlabel("calibration images")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.set_title(title or "")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return save_figure(fig, out_stem, formats)


def _run_mode(runs: Mapping[Any, Mapping[str, Any]]) -> str:
    for results in runs.values():
        return str(results.get("config", {}).get("mode", ""))
    return ""


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
    gaps: dict[float, list[tuple[int, float]]] = {}
    accs: dict[float, list[tuple[int, float]]] = {}
    for n, results in runs.items():
        for p in compressed_points(results):
            accs.setdefault(p["knob"], []).append((n, 100 * p["accuracy"]))
            budget, achieved = p.get("budget"), p.get("achieved")
            if budget and achieved is not None:
                gap = abs(budget - achieved) / budget
                gaps.setdefault(p["knob"], []).append((n, max(gap, gap_floor)))
    if not accs:
        raise BALFError("no allocator-iteration points to plot")
    fig = Figure(figsize=(10.0, 3.8))
    ax_gap, ax_acc = fig.subplots(1, 2)
    styles = _ratio_styles(mode_style(_run_mode(runs)).color, list(accs))
    for knob, style in styles.items():
        if knob in gaps:
            ax_gap.plot(*_columns(gaps[knob]), **style)
        ax_acc.plot(*_columns(accs[knob]), **style)
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
    ax_acc.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
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
        xs, ys = _columns(curve.items())
        style = "--" if name == "original" else "-"
        ax_sev.plot(xs, ys, style, marker="o", markersize=3, color=colors[name], label=name)
    ax_sev.set_xlabel("severity")
    ax_sev.set_ylabel("top-1 accuracy (%), mean over corruptions")
    ax_sev.grid(alpha=0.3)
    ax_sev.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.04, 1.0), frameon=False)
    fig.suptitle(title or "")
    fig.tight_layout()
    return save_figure(fig, out_stem, formats)


def _variants(results_by_mode: Mapping[str, Mapping[str, Any]]):
    """``(column name, mode, shade index, point)`` of the original and each compressed point."""
    seen_original = False
    for mode, results in results_by_mode.items():
        base = original_point(results)
        if base is not None and not seen_original:
            seen_original = True
            yield "original", None, 0, base
        points = sorted(compressed_points(results), key=lambda p: -p["knob"])
        for i, p in enumerate(points):
            yield f"{mode_style(mode).label} {p['knob']:g}", mode, (i, len(points)), p


def _variant_colors(results_by_mode: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    colors: dict[str, Any] = {}
    for name, mode, idx, _ in _variants(results_by_mode):
        if mode is None:
            colors[name] = "#404040"
        else:
            i, n = idx
            colors[name] = _shade(mode_style(mode).color, 0.65 * i / max(n - 1, 1))
    return colors


def _severity_curves(
    results_by_mode: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[int, float]]:
    """Accuracy (%) per severity, averaged over corruptions, for each variant."""
    curves: dict[str, dict[int, float]] = {}
    for name, _, _, point in _variants(results_by_mode):
        by_severity: dict[int, list[float]] = {}
        for severities in (point.get("corrupted") or {}).values():
            for s, acc in (severities or {}).items():
                if isinstance(acc, (int, float)):
                    by_severity.setdefault(int(s), []).append(100 * acc)
        if by_severity:
            curves[name] = {s: sum(v) / len(v) for s, v in by_severity.items()}
    return curves
