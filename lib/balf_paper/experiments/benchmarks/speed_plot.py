"""Figures and tables of the speed benchmarks, rendered from their stored JSON.

- :func:`plot_speedup`: ``speed_<device>.{pdf,png}``, measured speedup vs FLOPs reduction.
- :func:`write_latency_outputs`: the latency mode's ``latency_<device>.md``,
  ``latency_summary_<device>.md``, ``latency_accuracy_<device>.md`` (when rows carry an
  accuracy) and ``latency_<device>.{pdf,png}`` (tables and plot from
  :mod:`balf_paper.experiments.latency`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from balf.io.atomic import atomic_write_text
from balf_paper.experiments.latency import plots as latency_plots
from balf_paper.experiments.latency import report as latency_report
from balf_paper.experiments.render.plots import save_figure

__all__ = ["latency_tables", "plot_speedup", "summary_table", "write_latency_outputs"]


def plot_speedup(results: dict[str, Any], stem: Path) -> list[Path]:
    """Speedup vs FLOPs reduction (one panel per model, a line per batch size) -> PDF + PNG.

    Args:
        results: the ``speed_<device>.json`` contents (``rows``, ``environment``).
        stem: written as ``<stem>.pdf`` and ``<stem>.png``.
    """
    rows = results["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig = Figure(figsize=(4.2 * max(1, len(models)), 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(models)), squeeze=False)
    for ax, name in zip(axes[0], models, strict=False):
        mine = [r for r in rows if r["model"] == name]
        top = max([r["flops_reduction"] for r in mine] + [1.0])
        ax.plot([1, top], [1, top], "k--", lw=1, label="ideal (y = x)")
        for b in sorted({r["batch_size"] for r in mine}):
            pts = sorted((r["flops_reduction"], r["speedup"]) for r in mine if r["batch_size"] == b)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=4, label=f"batch {b}")
        ax.set_title(name)
        ax.set_xlabel("FLOPs reduction (original / compressed)")
        ax.set_ylabel("measured speedup")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    device = results.get("environment", {}).get("device", "")
    fig.suptitle(f"BALF inference speedup ({device})")
    fig.tight_layout()
    return save_figure(fig, stem)


def summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """The speed rows as a Markdown table (FLOPs ratio, latency, throughput, speedup)."""
    head = "| model | variant | FLOPs ratio | batch | latency (ms) | images/s | speedup |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['flops_ratio']:.3f} | {r['batch_size']} | "
            f"{1e3 * r['latency_s']:.2f} | {r['throughput']:.1f} | {r['speedup']:.2f} |"
        )
    return "\n".join(lines)


def latency_tables(rows: Sequence[dict[str, Any]], stem: Path, device: str) -> dict[Path, str]:
    """The latency mode's Markdown tables by path (``stem``: ``.../latency_<device>``)."""
    tables = {
        stem.with_suffix(".md"): latency_report.ratio_table(rows),
        stem.with_name(f"latency_summary_{device}.md"): latency_report.summary_table(rows),
    }
    if any(r["accuracy"] is not None for r in rows):
        accuracy_path = stem.with_name(f"latency_accuracy_{device}.md")
        tables[accuracy_path] = latency_report.accuracy_table(rows)
    return tables


def write_latency_outputs(
    results: dict[str, Any], stem: Path, device: str
) -> tuple[dict[Path, str], list[Path]]:
    """Write the latency mode's tables and plot; the tables (path -> text) and the plot paths."""
    rows = results["rows"]
    tables = latency_tables(rows, stem, device)
    for path, text in tables.items():
        atomic_write_text(text, path)
    device_name = results.get("environment", {}).get("device", "")
    paths = latency_plots.plot_latency(rows, stem, f"BALF latency budgets ({device_name})")
    return tables, paths
