"""The one renderer: every figure and table regenerated from stored results (nothing recomputed).

:func:`render_all` walks a results tree (:mod:`.tree`); tables (:mod:`.tables`,
:mod:`.table_format`), figures (:mod:`.plots`, :mod:`.plot_studies`, :mod:`.plot_style`), the
calibration-under-shift and language views (:mod:`.calib_shift`, :mod:`.language`), the studies
outside the sweeps (:mod:`.studies`), README table sync (:mod:`.readme`) and run comparison
(:mod:`.compare`) are its parts. Nothing is imported here: the command lines' ``--help`` stays
free of matplotlib and pandas.
"""
