"""Table and figure of a task swept per calibration strategy (the language tasks), rendered only
from the stored run folders ``<out>/<strategy>/<mode>/results.json``.

Writes ``<out>/table.md`` (rows: mode × strategy; columns: knob, the kept parameter ratio;
cells: the task's metric, "n/a" where the budget could not be met, "—" where there is no point),
``<out>/table.tex`` and ``<out>/figure.{png,pdf}`` (metric vs kept parameter ratio of the
compressed layers; solid: whole-model calibration, dashed: block by block; log scale for
perplexity), with the uncompressed model's score as its own row and line. Zero-shot scores of
lm-evaluation-harness (``metrics["lm_eval"]``) follow the main table, one table per task and
metric (:func:`~balf_paper.experiments.tasks.language.lm_eval_tasks.markdown_tables`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balf.io.atomic import atomic_write_text
from balf_paper.experiments.modes import display_of, mode_order
from balf_paper.experiments.render.plot_style import save_figure
from balf_paper.experiments.sweep.methods import uses_calibration
from balf_paper.experiments.sweep.points import ResultPoint, SkippedPoint, read_points
from balf_paper.experiments.sweep.store import metric_of, read_results_file
from balf_paper.experiments.tasks.base import Metric
from balf_paper.experiments.tasks.language.lm_eval_tasks import latex_tables, markdown_tables

__all__ = ["StrategySweeps", "load_strategy_sweeps", "render_language"]

_STRATEGY_LABEL = {
    "whole": "whole-model",
    "block": "block by block",
    "block-refit": "block by block + anchored refit",
    "refit": "layer-sequential refit",
}
_DIGITS = {"perplexity": 2}  # others: 4
_LOG_SCALE = ("perplexity",)


@dataclass
class StrategySweeps:
    """The stored sweeps of one task folder, by (mode, strategy)."""

    metric: Metric
    points: dict[tuple[str, str], list[ResultPoint]] = field(default_factory=dict)
    skipped: dict[tuple[str, str], list[SkippedPoint]] = field(default_factory=dict)
    baseline: ResultPoint | None = None
    weights: str = ""


def load_strategy_sweeps(out: Path) -> StrategySweeps | None:
    """Every ``<out>/<strategy>/<mode>/results.json`` (``None`` when there is none)."""
    found: StrategySweeps | None = None
    for path in sorted(Path(out).glob("*/*/results.json")):
        results = read_results_file(path)
        if results is None:
            continue
        config = results.get("config", {})
        key = (config.get("mode", path.parent.name), path.parent.parent.name)
        if found is None:
            found = StrategySweeps(metric_of(results), weights=str(config.get("weights", "")))
        points = read_points(results, path)
        found.points[key] = [p for p in points if not p.is_original]
        found.skipped[key] = [SkippedPoint.from_dict(s, path) for s in results.get("skipped", [])]
        found.baseline = found.baseline or next((p for p in points if p.is_original), None)
    return found


def _label(mode: str) -> str:
    display = display_of(mode)
    return display.label if display is not None else mode


def _keys(sweeps: StrategySweeps) -> list[tuple[str, str]]:
    order = {m: i for i, m in enumerate(mode_order())}
    keys = set(sweeps.points) | set(sweeps.skipped)
    return sorted(keys, key=lambda k: (order.get(k[0], 99), k[1] != "whole", k))


def _row_label(mode: str, strategy: str) -> list[str]:
    calibration = _STRATEGY_LABEL.get(strategy, strategy)
    return [_label(mode), calibration if uses_calibration(mode) else "none (data-free)"]


def _lm_eval_args(sweeps: StrategySweeps, keys: list, ratios: list[float]) -> tuple:
    """The arguments of the lm-eval table makers: the points' metrics as the stored dicts they
    read (``{"lm_eval": ...}``, ``{"skipped": ...}`` for a skipped knob)."""
    cells: dict[tuple, dict[str, Any]] = {}
    for (mode, strategy), points in sweeps.points.items():
        cells |= {(mode, strategy, float(p.knob)): dict(p.metrics) for p in points}
    for (mode, strategy), skipped in sweeps.skipped.items():
        cells |= {(mode, strategy, float(s.knob)): {"skipped": s.reason} for s in skipped}
    baseline = dict(sweeps.baseline.metrics) if sweeps.baseline is not None else {}
    return list(cells.values()), baseline, ratios, keys, cells, _row_label


def _value(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.3g}" if abs(value) >= 1e5 else f"{value:.{digits}f}"


def render_language(out: Path) -> list[Path]:
    """Render the table and figure of the sweeps stored under ``out``; the files written."""
    out = Path(out)
    sweeps = load_strategy_sweeps(out)
    if sweeps is None:
        return []
    metric, digits = sweeps.metric.name, _DIGITS.get(sweeps.metric.name, 4)
    keys = _keys(sweeps)
    knobs = {float(p.knob) for ps in sweeps.points.values() for p in ps}
    knobs |= {float(s.knob) for ss in sweeps.skipped.values() for s in ss}
    ratios = sorted(knobs, reverse=True)
    head = "| mode | calibration | " + " | ".join(f"{r:g}" for r in ratios) + " |"
    lines = [head, "|---|---|" + "--:|" * len(ratios)]
    for mode, strategy in keys:
        points = sweeps.points.get((mode, strategy), [])
        cells = {float(p.knob): _value(p.metric(metric), digits) for p in points}
        cells |= {float(s.knob): "n/a" for s in sweeps.skipped.get((mode, strategy), [])}
        row = [cells.get(r, "—") for r in ratios]
        lines.append("| " + " | ".join([*_row_label(mode, strategy), *row]) + " |")
    base = None if sweeps.baseline is None else sweeps.baseline.metric(metric)
    if base is not None:
        lines.append(
            f"| uncompressed | — | {base:.{digits}f} (all ratios) |" + " |" * (len(ratios) - 1)
        )
    md = out / "table.md"
    lm_eval = _lm_eval_args(sweeps, keys, ratios)
    lm_eval_md = markdown_tables(*lm_eval)  # zero-shot scores (--lm-eval-tasks), if any
    atomic_write_text("\n".join(lines) + "\n" + (f"\n{lm_eval_md}\n" if lm_eval_md else ""), md)
    tex_rows = [" & ".join(["mode", "calibration", *[f"{r:g}" for r in ratios]]) + r" \\"]
    for line in lines[2:]:
        tex_rows.append(" & ".join(c.strip() for c in line.strip("|").split("|")) + r" \\")
    tex = out / "table.tex"
    body = "\n".join(tex_rows)
    head_tex = f"\\begin{{tabular}}{{ll{'r' * len(ratios)}}}"
    lm_eval_tex = f"\n{latex_tables(*lm_eval)}\n" if lm_eval_md else ""
    atomic_write_text(f"{head_tex}\n{body}\n\\end{{tabular}}\n{lm_eval_tex}", tex)
    return [md, tex, *_figure(out, sweeps, keys, base)]


def _figure(out: Path, sweeps: StrategySweeps, keys: list, base: float | None) -> list[Path]:
    from matplotlib.figure import Figure

    metric = sweeps.metric.name
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for mode, strategy in keys:
        pts = [p for p in sweeps.points.get((mode, strategy), []) if p.metric(metric) is not None]
        if not pts:
            continue
        pts.sort(key=lambda p: float(p.knob))
        display = display_of(mode)
        ax.plot(
            [p.layer_params_ratio if p.layer_params_ratio is not None else p.knob for p in pts],
            [p.metric(metric) for p in pts],
            linestyle="-" if strategy == "whole" else "--",
            marker=display.marker if display else "o",
            color=display.color if display else None,
            label=f"{_label(mode)}, {_STRATEGY_LABEL.get(strategy, strategy)}"
            if uses_calibration(mode)
            else _label(mode),
        )
    if base is not None:
        ax.axhline(base, color="black", linewidth=0.8, label="uncompressed")
    if metric in _LOG_SCALE:
        ax.set_yscale("log")
    ax.set_xlabel("parameters kept (compressed layers)")
    ax.set_ylabel(metric)
    ax.set_title(sweeps.weights, fontsize=8)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out / "figure", ("png", "pdf"), dpi=150, tight=False)
