"""The one renderer: every figure and table regenerated from stored results (nothing recomputed).

:func:`render_all` walks a results tree (:mod:`.tree`); tables (:mod:`.tables`,
:mod:`.table_format`), figures (:mod:`.plots`, :mod:`.plot_studies`, :mod:`.plot_style`), the
calibration-under-shift and language views (:mod:`.calib_shift`, :mod:`.language`), the studies
outside the sweeps (:mod:`.studies`), README table sync (:mod:`.readme`) and run comparison
(:mod:`.compare`) are its parts.
"""

from balf_paper.experiments.render.tree import render_all, render_benchmark, render_model

__all__ = ["render_all", "render_benchmark", "render_model"]
