"""Figures of the experiments, rendered only from stored results.

Each ``plot_*`` function takes already-loaded results (see
:mod:`balf_paper.experiments.render.loaders`), reads their points as
:class:`~balf_paper.experiments.sweep.points.ResultPoint`, draws one figure with matplotlib's object
API on an Agg canvas and writes it as PDF and PNG
(:func:`~balf_paper.experiments.render.plot_style.save_figure`). They return the written paths. This
module draws accuracy against cost; the side studies (calibration size, allocator iterations,
corruptions) are in :mod:`balf_paper.experiments.render.plot_studies` and re-exported here.

Modes keep the same colour and marker in every figure (:func:`mode_style`, declared with each
:class:`balf_paper.experiments.modes.ModeDisplay`); BALF's two modes are drawn thicker and on
top. Other works' published points (:func:`load_other_works`) are overlaid on the
accuracy-vs-ratio plots at ``ratio = 1 + delta_quantity_pct/100`` and ``accuracy = our
original accuracy + delta_top1_pp`` — only on the plot of the quantity they report, and only
for the same dataset and model name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from balf.errors import BALFError
from balf_paper.experiments.render.labels import dataset_label, other_works_source
from balf_paper.experiments.render.plot_studies import (
    plot_calibration_size,
    plot_corruption,
    plot_n_iters,
)
from balf_paper.experiments.render.plot_style import (
    WORK_COLORS,
    WORK_MARKERS,
    ModeStyle,
    mode_style,
    save_figure,
)
from balf_paper.experiments.sweep.points import (
    ResultPoint,
    compressed_of,
    original_of,
    read_points,
)

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
            marker=WORK_MARKERS[i % len(WORK_MARKERS)],
            color=WORK_COLORS[i % len(WORK_COLORS)],
            s=55,
            zorder=5,
            label=f"{label} (reported{f', {release}' if release else ''})",
        )
    below = int((base_accuracy + points["delta_top1_pp"] < 0).sum())
    if below:
        log.info("%d other-work points fall below 0%% accuracy on our base; not shown", below)
    ax.set_ylim(bottom=max(ax.get_ylim()[0], 0.0))


def _draw_mode(ax: Axes, mode: str, points: Sequence[ResultPoint], quantity: str) -> None:
    """One mode's line: accuracy (%) over the ``quantity`` ratio of its compressed points."""
    style = mode_style(mode)
    pts = sorted(
        (p for p in points if p.ratio(quantity) is not None), key=lambda p: p.ratio(quantity)
    )
    stds = [p.std("accuracy") for p in pts]  # means over seeds
    seeded = bool(pts) and all(s is not None for s in stds)
    kwargs = dict(
        color=style.color,
        marker=style.marker,
        markersize=6 if style.emphasised else 4,
        linewidth=2.4 if style.emphasised else 1.2,
        alpha=1.0 if style.emphasised else 0.85,
        zorder=4 if style.emphasised else 3,
    )
    x, y = [p.ratio(quantity) for p in pts], [100 * p.accuracy for p in pts]
    if not seeded:
        ax.plot(x, y, label=style.label, **kwargs)
        return
    n = len(pts[0].seeds or [])
    label = f"{style.label} (mean ± std, {n} seeds)"
    ax.errorbar(x, y, yerr=[100 * s for s in stds], capsize=2, label=label, **kwargs)


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
        stored = read_points(results)
        _draw_mode(ax, mode, compressed_of(stored), quantity)
        base = base or original_of(stored)
    if base is not None:
        acc = 100 * base.accuracy
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
