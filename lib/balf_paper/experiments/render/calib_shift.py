"""Tables and figure of the calibration-under-shift experiment, from its stored results only.

Reads ``<model_dir>/calib-shift/<set>/<mode>/`` (every seed, merged into mean ± std by
:func:`balf_paper.experiments.sweep.seeds.aggregate_seeds`) and writes

- ``tables/calib_shift.{tex,md}``: clean-test accuracy (%) per calibration set (rows: clean,
  then every corrupted set) and (mode, keep-ratio) column;
- ``tables/calib_shift_groups.{tex,md}``: per corruption group (noise, blur, weather, digital,
  extra, ImageNet-V2), the mean over the group's sets of *shifted − clean* accuracy (pp;
  negative = calibrating on shifted images costs accuracy);
- ``figures/calib_shift.*``: accuracy vs keep-ratio per mode, clean calibration in black, each
  corrupted set coloured by group.

Columns use the mode's knob (the budget's keep-ratio), not the measured ratio: every set of one
mode is compressed to the same budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from balf_paper.data.imagenet_shift import IMAGENET_C_CORRUPTIONS, IMAGENET_C_GROUPS
from balf_paper.experiments.layout import CALIB_SHIFT_DIR
from balf_paper.experiments.render.labels import dataset_label
from balf_paper.experiments.render.plot_style import save_figure
from balf_paper.experiments.render.tables import _frame, mode_label, write_table
from balf_paper.experiments.sweep.points import compressed_of, read_points
from balf_paper.experiments.sweep.seeds import aggregate_seeds, load_seed_runs, mean_std_text

__all__ = ["calib_shift_group_table", "calib_shift_table", "load_calib_shift",
           "plot_calib_shift", "render_calib_shift"]  # fmt: skip

#: ``{set: {mode: results (merged over seeds)}}``.
Runs = Mapping[str, Mapping[str, Mapping[str, Any]]]
GROUP_COLORS = {"noise": "#d62728", "blur": "#1f77b4", "weather": "#2ca02c",
                "digital": "#9467bd", "extra": "#8c564b", "imagenet-v2": "#ff7f0e"}  # fmt: skip


def _set_order(name: str) -> tuple[int, str]:
    if name == "clean":
        return (-1, name)
    corruption = name.rsplit("-s", 1)[0]
    if corruption in IMAGENET_C_CORRUPTIONS:
        return (IMAGENET_C_CORRUPTIONS.index(corruption), name)
    return (len(IMAGENET_C_CORRUPTIONS), name)


def load_calib_shift(model_dir: str | Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``{set: {mode: results}}`` of ``<model_dir>/calib-shift``, seeds merged; sets in order
    (clean, then the corruptions in the benchmark's order)."""
    root = Path(model_dir) / CALIB_SHIFT_DIR
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for set_dir in sorted(root.iterdir()) if root.is_dir() else []:
        for mode_dir in sorted(set_dir.iterdir()) if set_dir.is_dir() else []:
            runs = load_seed_runs(mode_dir)
            if runs:
                found.setdefault(set_dir.name, {})[mode_dir.name] = aggregate_seeds(runs)
    return {k: found[k] for k in sorted(found, key=_set_order)}


def _group(results: Mapping[str, Any]) -> str:
    shift = results.get("config", {}).get("calibration_shift") or {}
    return str(shift.get("group") or ("clean" if not shift or shift.get("set") == "clean"
                                      else "other"))  # fmt: skip


def _by_knob(results: Mapping[str, Any]) -> dict[float, Any]:
    return {float(p.knob): p for p in compressed_of(read_points(results))}


def _columns(runs: Runs) -> list[tuple[str, float]]:
    modes = sorted({m for per in runs.values() for m in per})
    columns = []
    for m in modes:
        knobs = {k for per in runs.values() if m in per for k in _by_knob(per[m])}
        columns += [(m, k) for k in sorted(knobs, reverse=True)]
    return columns


def calib_shift_table(runs: Runs) -> pd.DataFrame:
    """Clean-test accuracy (%) per calibration set × (mode, keep-ratio); "m ± s" over seeds."""
    columns = _columns(runs)
    rows = {}
    for name, per in runs.items():
        row = []
        for mode, knob in columns:
            p = _by_knob(per[mode]).get(knob) if mode in per else None
            if p is None:
                row.append(math.nan)
                continue
            std = p.std("accuracy")
            row.append(mean_std_text(100 * p.accuracy, None if std is None else 100 * std))
        rows[name] = row
    return _frame(rows, [f"{mode_label(m)} {k:g}" for m, k in columns], "Calibration set")


def calib_shift_group_table(runs: Runs) -> pd.DataFrame:
    """Mean over each group's sets of (shifted − clean) accuracy in pp, per (mode, keep-ratio)."""
    clean = runs.get("clean", {})
    columns = _columns(runs)
    deltas: dict[str, list[list[float]]] = {}
    counts: dict[str, int] = {}
    for name, per in runs.items():
        if name == "clean":
            continue
        group = _group(next(iter(per.values())))
        counts[group] = counts.get(group, 0) + 1
        cells = deltas.setdefault(group, [[] for _ in columns])
        for i, (mode, knob) in enumerate(columns):
            p = _by_knob(per[mode]).get(knob) if mode in per else None
            c = _by_knob(clean[mode]).get(knob) if mode in clean else None
            if p is not None and c is not None:
                cells[i].append(100 * (p.accuracy - c.accuracy))
    order = [*IMAGENET_C_GROUPS, "imagenet-v2", "other"]
    groups = sorted(deltas, key=lambda g: order.index(g) if g in order else len(order))
    rows = {
        f"{g} ({counts[g]} set{'' if counts[g] == 1 else 's'})": [
            sum(v) / len(v) if v else math.nan for v in deltas[g]
        ]
        for g in groups
    }
    return _frame(rows, [f"{mode_label(m)} {k:g}" for m, k in columns], "Group")


def plot_calib_shift(
    runs: Runs, out_stem: str | Path, *, title: str = "", formats: Sequence[str] = ("pdf", "png")
) -> list[Path]:
    """Accuracy vs keep-ratio, one panel per mode: clean calibration black, sets by group."""
    modes = sorted({m for per in runs.values() for m in per})
    fig = Figure(figsize=(5.2 * len(modes), 4.2))
    axes = [fig.add_subplot(1, len(modes), i + 1) for i in range(len(modes))]
    for ax, mode in zip(axes, modes, strict=True):
        seen: set[str] = set()
        for name, per in runs.items():
            if mode not in per:
                continue
            pts = sorted(_by_knob(per[mode]).items())
            group = "clean" if name == "clean" else _group(per[mode])
            label = None if group in seen else group
            seen.add(group)
            ax.plot(
                [k for k, _ in pts],
                [100 * p.accuracy for _, p in pts],
                color="black" if group == "clean" else GROUP_COLORS.get(group, "grey"),
                linewidth=2.2 if group == "clean" else 1.0,
                alpha=1.0 if group == "clean" else 0.7,
                marker="o" if group == "clean" else ".",
                zorder=4 if group == "clean" else 3,
                label=label,
            )
        ax.set_xlabel("keep-ratio (budget)")
        ax.set_ylabel("clean top-1 accuracy (%)")
        ax.set_title(mode_label(mode), fontsize="medium")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", title="calibration", title_fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out_stem, formats)


def render_calib_shift(
    model_dir: Path, dataset: str, model: str, formats: Sequence[str] = ("pdf", "png")
) -> list[Path]:
    """The calibration-shift figure and tables of one model folder (``[]`` when absent)."""
    runs = load_calib_shift(model_dir)
    if not runs:
        return []
    label = dataset_label(dataset)
    written = plot_calib_shift(
        runs,
        model_dir / "figures" / "calib_shift",
        title=f"{label} / {model}: calibration under shift",
        formats=formats,
    )
    seeds = sorted({s for per in runs.values() for r in per.values()
                    for s in r.get("config", {}).get("seeds", [])})  # fmt: skip
    over = f" Mean ± std over seeds {', '.join(map(str, seeds))}." if seeds else ""
    written += write_table(
        calib_shift_table(runs),
        model_dir / "tables" / "calib_shift",
        f"{model} on {label}: clean test accuracy (%) after compressing with calibration images "
        f"from each set (rows) at each mode and keep-ratio (columns).{over}",
        f"tab:{dataset}-{model}-calib-shift",
    )
    written += write_table(
        calib_shift_group_table(runs),
        model_dir / "tables" / "calib_shift_groups",
        f"{model} on {label}: accuracy change (pp) from calibrating on shifted instead of clean "
        "images, mean over each group's sets (negative = shifted calibration costs accuracy).",
        f"tab:{dataset}-{model}-calib-shift-groups",
    )
    return written
