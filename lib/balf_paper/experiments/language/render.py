"""Tables and figure of a language sweep, rendered only from its stored JSON points.

Writes ``<out>/table.md`` (rows: mode × strategy; columns: parameter ratio; cells: the metric),
``<out>/table.tex`` and ``<out>/figure.{png,pdf}`` (metric vs kept parameter ratio of the
compressed layers; solid: whole-model calibration, dashed: block by block, dotted: block by
block with the anchored refit).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from balf.io.atomic import atomic_write_text, read_json_or_none
from balf_paper.experiments.language.lm_eval_tasks import latex_tables, markdown_tables
from balf_paper.experiments.modes import display_of, mode_order

__all__ = ["load_points", "render"]

_STRATEGY_LABEL = {
    "whole": "whole-model",
    "block": "block by block",
    "block-refit": "block by block + refit",
}
_LINESTYLE = {"whole": "-", "block": "--", "block-refit": ":"}


def _strategy_labels(points: list[dict[str, Any]]) -> dict[str, str]:
    """Each strategy's label; the refit's with its β (``+ refit β=…``, several if they differ)."""
    labels = dict(_STRATEGY_LABEL)
    betas = sorted({p["refit"]["beta"] for p in points if isinstance(p.get("refit"), dict)})
    if betas:
        labels["block-refit"] += " (β = " + ", ".join(f"{b:g}" for b in betas) + ")"
    return labels


def load_points(out: Path) -> list[dict[str, Any]]:
    """Every stored point under ``out/points`` (sorted by strategy, mode, ratio)."""
    points = [json.loads(p.read_text()) for p in sorted((out / "points").rglob("*.json"))]
    return sorted(points, key=lambda p: (p["strategy"], p["mode"], -p["ratio"]))


def _label(mode: str) -> str:
    display = display_of(mode)
    return display.label if display is not None else mode


def _rows(points: list[dict[str, Any]]) -> tuple[list[float], list[tuple[str, str]], dict]:
    ratios = sorted({p["ratio"] for p in points}, reverse=True)
    order = {m: i for i, m in enumerate(mode_order())}
    keys = sorted(
        {(p["mode"], p["strategy"]) for p in points},
        key=lambda k: (order.get(k[0], 99), list(_STRATEGY_LABEL).index(k[1])
                       if k[1] in _STRATEGY_LABEL else 99, k[1]),  # fmt: skip
    )
    cells = {(p["mode"], p["strategy"], p["ratio"]): p for p in points}
    return ratios, keys, cells


def _row_label(mode: str, strategy: str, labels: dict[str, str] = _STRATEGY_LABEL) -> list[str]:
    calibration = "none (data-free)" if mode == "uniform" else labels.get(strategy, strategy)
    return [_label(mode), calibration]


def _cell(point: dict[str, Any] | None, metric: str, digits: int) -> str:
    if point is None:
        return "—"
    if "skipped" in point:
        return "n/a"
    value = point.get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.3g}" if abs(value) >= 1e5 else f"{value:.{digits}f}"


def render(out: Path) -> list[Path]:
    """Render the tables and figure of the sweep stored in ``out``; returns the files written."""
    out = Path(out)
    points = load_points(out)
    baseline = read_json_or_none(out / "baseline.json") or {}
    if not points:
        return []
    metric = (
        "perplexity"
        if "perplexity" in baseline or any("perplexity" in p for p in points)
        else "spearman"
    )
    digits = 2 if metric == "perplexity" else 4
    ratios, keys, cells = _rows(points)
    labels = _strategy_labels(points)

    def row_label(mode: str, strategy: str) -> list[str]:
        return _row_label(mode, strategy, labels)

    head = "| mode | calibration | " + " | ".join(f"{r:g}" for r in ratios) + " |"
    lines = [head, "|---|---|" + "--:|" * len(ratios)]
    for mode, strategy in keys:
        row = [_cell(cells.get((mode, strategy, r)), metric, digits) for r in ratios]
        lines.append("| " + " | ".join([*row_label(mode, strategy), *row]) + " |")
    if metric in baseline:
        lines.append(
            f"| uncompressed | — | {baseline[metric]:.{digits}f} (all ratios) |"
            + " |" * (len(ratios) - 1)
        )
    md = out / "table.md"
    table_args = (points, baseline, ratios, keys, cells, row_label)
    lm_eval_md = markdown_tables(*table_args)  # zero-shot scores (--lm-eval-tasks), if any
    atomic_write_text("\n".join(lines) + "\n" + (f"\n{lm_eval_md}\n" if lm_eval_md else ""), md)
    tex_rows = [" & ".join(["mode", "calibration", *[f"{r:g}" for r in ratios]]) + r" \\"]
    for line in lines[2:]:
        tex_rows.append(" & ".join(c.strip() for c in line.strip("|").split("|")) + r" \\")
    tex = out / "table.tex"
    atomic_write_text(
        "\\begin{tabular}{ll"
        + "r" * len(ratios)
        + "}\n"
        + "\n".join(tex_rows)
        + "\n\\end{tabular}\n"
        + (f"\n{latex_tables(*table_args)}\n" if lm_eval_md else ""),
        tex,
    )
    written = [md, tex]
    written += _figure(out, points, keys, metric, baseline, labels)
    return written


def _figure(out, points, keys, metric, baseline, labels) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, strategy in keys:
        pts = [p for p in points if p["mode"] == mode and p["strategy"] == strategy and metric in p]
        if not pts:
            continue
        pts.sort(key=lambda p: p["ratio"])
        display = display_of(mode)
        ax.plot(
            [p.get("layer_params_ratio", p["ratio"]) for p in pts],
            [p[metric] for p in pts],
            linestyle=_LINESTYLE.get(strategy, "-."),
            marker=display.marker if display else "o",
            color=display.color if display else None,
            label=f"{_label(mode)}, {labels.get(strategy, strategy)}"
            if mode != "uniform"
            else _label(mode),
        )
    if metric in baseline:
        ax.axhline(baseline[metric], color="black", linewidth=0.8, label="uncompressed")
    if metric == "perplexity":
        ax.set_yscale("log")
    ax.set_xlabel("parameters kept (compressed layers)")
    ax.set_ylabel(metric)
    ax.set_title(baseline.get("provenance", ""), fontsize=8)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths = [out / "figure.png", out / "figure.pdf"]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths
