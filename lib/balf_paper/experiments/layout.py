"""Where a results tree keeps each experiment's run folders (written by the command lines,
read by the renderer).

``<out-root>/<dataset>/<model>/`` holds one folder per mode sweep (``<mode>/``) and one per
experiment below: ``calib-size/calib<N>/``, ``n-iters/iters<N>/``, ``corruption/<mode>/``,
``calib-shift/<set>/<mode>/``; a mode calibrated with another strategy than whole-model is
``<mode>+<strategy>/`` (``flops_auto+refit``); language tasks ``<strategy>/<mode>/``
(``results/language/<task>/``). A run folder of seed
``k > 0`` is ``<run folder>/seed<k>/`` (:mod:`balf_paper.experiments.sweep.seeds`). Figures and
tables are rendered into ``figures/`` and ``tables/`` beside them.
"""

from __future__ import annotations

__all__ = ["CALIB_SHIFT_DIR", "CALIB_SIZE_DIR", "CORRUPTION_DIR", "N_ITERS_DIR", "SPECIAL_DIRS"]

CALIB_SIZE_DIR = "calib-size"
N_ITERS_DIR = "n-iters"
CORRUPTION_DIR = "corruption"
CALIB_SHIFT_DIR = "calib-shift"

SPECIAL_DIRS = frozenset(
    {CALIB_SIZE_DIR, N_ITERS_DIR, CORRUPTION_DIR, CALIB_SHIFT_DIR, "figures", "tables"}
)
"""Folders of a model directory that are not a mode's sweep."""
