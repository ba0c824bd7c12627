"""The figure of the latency-budget rows (:mod:`balf_paper.experiments.latency`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from balf_paper.experiments.latency.report import done_rows
from balf_paper.experiments.render.plot_style import save_figure

__all__ = ["plot_latency"]


_BUDGETS = (("latency_auto", "o-", "latency"), ("flops_auto", "s:", "FLOPs"))


def _ratio_panel(ax: Any, mine: Sequence[dict[str, Any]], colours: dict[int, str]) -> None:
    """Measured vs requested latency ratio of one model's rows, one colour per batch size."""
    ax.plot([0.2, 1], [0.2, 1], "k--", lw=1, label="requested (y = x)")
    ax.fill_between(
        [0.2, 1], [0.2 * 0.95, 0.95], [0.2 * 1.05, 1.05], color="k", alpha=0.08, label="±5%"
    )
    for b in sorted({r["batch_size"] for r in mine}):
        colour = colours.setdefault(b, f"C{len(colours)}")
        for mode, style, budget in _BUDGETS:
            pts = sorted(
                (r["requested"], r["measured_ratio"])
                for r in mine
                if r["batch_size"] == b and r["mode"] == mode
            )
            if pts:
                label = f"batch {b}, {budget} budget"
                ax.plot(*zip(*pts, strict=True), style, color=colour, ms=4, label=label)
    ax.set_xlabel("requested keep-ratio")
    ax.set_ylabel("measured latency ratio")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)


def _accuracy_panel(ax: Any, mine: Sequence[dict[str, Any]], colours: dict[int, str]) -> None:
    """Accuracy (%) vs measured latency ratio of one model's rows (original on both curves)."""
    for b in sorted({r["batch_size"] for r in mine}):
        for mode, style, budget in _BUDGETS:
            pts = sorted(
                (r["measured_ratio"], 100 * r["accuracy"])
                for r in mine
                if r["batch_size"] == b and r["mode"] in (mode, "original")
            )
            label = f"batch {b}, {budget} budget"
            ax.plot(*zip(*pts, strict=True), style, color=colours[b], ms=4, label=label)
    ax.set_xlabel("measured latency ratio")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)


def plot_latency(rows: Sequence[dict[str, Any]], stem: Path, title: str = "") -> list[Path]:
    """Measured vs requested latency ratio (top), accuracy vs measured ratio (bottom, models
    with accuracy), one panel per model, one colour per batch size."""
    rows = done_rows(rows)
    models = list(dict.fromkeys(r["model"] for r in rows))
    with_acc = [
        m for m in models if any(r["accuracy"] is not None for r in rows if r["model"] == m)
    ]
    n_rows = 2 if with_acc else 1
    fig = Figure(figsize=(4.0 * len(models), 3.6 * n_rows))
    axes = fig.subplots(n_rows, len(models), squeeze=False)
    colours: dict[int, str] = {}
    for j, name in enumerate(models):
        mine = [r for r in rows if r["model"] == name]
        _ratio_panel(axes[0][j], mine, colours)
        axes[0][j].set_title(name)
        if n_rows == 2 and name not in with_acc:
            axes[1][j].set_visible(False)
        elif n_rows == 2:
            _accuracy_panel(axes[1][j], mine, colours)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, stem)
