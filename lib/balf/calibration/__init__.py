"""Calibration: one pass over the data, per-layer Gram matrices (method §2).

:mod:`.batches` reads calibration data of every form, :mod:`.collect` runs the pass
(:func:`collect_statistics`), :mod:`.statistics` holds the results (:class:`Statistics`,
:class:`LayerStatistics`), :mod:`.example_input` finds one sample for FLOP counting and
:mod:`.distributed` shards the pass across processes.
"""

from balf.calibration.collect import collect_statistics
from balf.calibration.statistics import LayerStatistics, Statistics

__all__ = ["LayerStatistics", "Statistics", "collect_statistics"]
