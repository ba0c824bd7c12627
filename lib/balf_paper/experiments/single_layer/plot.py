"""The single-layer study's figure, rendered from its stored JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from balf_paper.experiments.render.plots import save_figure

__all__ = ["plot_curves"]

_STYLES = {"svd": ("tab:blue", "plain SVD"), "act_aware": ("tab:orange", "activation-aware")}
_SPLITS = (("heldout", "-", "o"), ("calibration", "--", "x"))


def plot_curves(results: dict[str, Any], stem: Path) -> list[Path]:
    """One panel per layer: both methods, held-out (solid) and calibration (dashed) errors.

    Args:
        results: the study's JSON (``source`` and ``layers``, see :mod:`.cli`).
        stem: written as ``<stem>.pdf`` and ``<stem>.png``.

    Returns:
        the written paths.
    """
    layers = results["layers"]
    fig = Figure(figsize=(4.3 * len(layers), 3.7))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    for ax, layer in zip(axes, layers, strict=True):
        x = [p["rank_fraction"] for p in layer["points"]]
        for method, (color, label) in _STYLES.items():
            for split, ls, marker in _SPLITS:
                y = [p[method][split] for p in layer["points"]]
                ax.plot(x, y, ls, color=color, marker=marker, ms=4, label=f"{label} ({split})")
        geo = layer["geometry"]
        ax.set_title(
            f"{layer['panel'].replace('_', ' ')}: G={geo['groups']}, "
            f"D={geo['in_dim']}, K={geo['out_dim']}",
            fontsize=10,
        )
        ax.set_xlabel("kept-rank ratio r / R")
        ax.set_ylabel("‖Y − Ŷ‖² / ‖Y‖²")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Plain SVD vs activation-aware factorization ({results['source']} layers)")
    fig.tight_layout()
    return save_figure(fig, stem)
