"""What every figure shares: the style of each mode and an atomic, reproducible ``save_figure``.

Figures are drawn with matplotlib's object API on an Agg canvas (no ``pyplot``, no global
backend switch) and written as PDF (for papers) and PNG (for the README), each through a
temporary file in the target folder and an ``os.replace``. PDFs carry no creation date, so
rerunning on the same results rewrites identical files.

Modes keep the same colour and marker in every figure (:func:`mode_style`, declared with each
config class: :class:`balf_paper.experiments.modes.ModeDisplay`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from balf.io.atomic import _umask
from balf_paper.experiments.modes import ModeDisplay, display_of

__all__ = ["ModeStyle", "mode_style", "save_figure"]

ModeStyle = ModeDisplay
"""How a mode is drawn (label, colour, marker, emphasised); an alias of ``ModeDisplay``."""

WORK_MARKERS = ("*", "P", "X", "d", "H", "8", "p", "<", ">", "v")
WORK_COLORS = ("#000000", "#e6550d", "#31a354", "#756bb1", "#636363", "#d6616b", "#3182bd")
_RATIO_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def mode_style(mode: str) -> ModeStyle:
    """The style of ``mode``; unknown modes get a grey dotted look with a stable marker."""
    display = display_of(mode)
    if display is not None:
        return display
    marker = WORK_MARKERS[sum(map(ord, mode)) % len(WORK_MARKERS)]
    return ModeStyle(mode, "#525252", marker)


def shade(color: str, fraction: float) -> tuple[float, float, float]:
    """``color`` mixed with white: ``fraction`` 0 → the colour, 1 → white."""
    r, g, b = mcolors.to_rgb(color)
    return (r + (1 - r) * fraction, g + (1 - g) * fraction, b + (1 - b) * fraction)


def columns(pairs: Iterable[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Sorted ``(x, y)`` pairs as an x list and a y list."""
    ordered = sorted(pairs)
    return [x for x, _ in ordered], [y for _, y in ordered]


def ratio_styles(color: str, knobs: Sequence[float]) -> dict[float, dict[str, Any]]:
    """Per keep-ratio line style: the mode colour, lighter and another marker for lower ratios."""
    knobs = sorted(knobs, reverse=True)
    return {
        k: {
            "color": shade(color, 0.6 * i / max(len(knobs) - 1, 1)),
            "marker": _RATIO_MARKERS[i % len(_RATIO_MARKERS)],
            "markersize": 5,
            "label": f"keep-ratio {k:g}",
        }
        for i, k in enumerate(knobs)
    }


def save_figure(
    fig: Figure,
    out_stem: str | Path,
    formats: Sequence[str] = ("pdf", "png"),
    dpi: int = 150,
    tight: bool = True,
) -> list[Path]:
    """Write ``fig`` to ``<out_stem>.<fmt>`` for each format, atomically; return the paths.

    ``tight``: crop to the drawn area (``bbox_inches="tight"``); PDFs carry no creation date,
    so rendering twice writes the same bytes."""
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
            bbox = "tight" if tight else None
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches=bbox, metadata=metadata)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        paths.append(path)
    return paths
