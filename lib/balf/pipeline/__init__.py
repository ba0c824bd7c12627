"""The orchestration wing: one compression pipeline over every calibration strategy.

:mod:`.compressor` (:class:`Compressor`, :func:`compress`) runs the pipeline — candidates, rank
selection, copy, installation, report, counts — once for every strategy; :mod:`.strategy` defines
the strategy protocol and :class:`WholeModel`, :mod:`.block_by_block` and :mod:`.block_runner`
:class:`BlockByBlock`, :mod:`.sequential` :class:`LayerSequential` (the anchored refit in forward
order); :mod:`.context` holds what a compressor measures once
(:class:`CompressionContext`, what budget metrics and objectives receive); :mod:`.baseline`,
:mod:`.install`, :mod:`.shape_check`, :mod:`.cached`, :mod:`.input_checks` and
:mod:`.sensitivity` (the measured weights of the sensitivity objective) are its steps;
:mod:`.latency_loop` (:func:`compress_to_latency`) lands a latency budget on the measured
whole-model latency by compressing, timing and correcting.
This folder sits above every other folder of ``balf`` (see ``docs/architecture.md``).
"""

from balf.pipeline.block_by_block import BlockByBlock
from balf.pipeline.compressor import Compressor, compress
from balf.pipeline.context import CompressionContext, DataOptions
from balf.pipeline.latency_loop import LatencyFit, compress_to_latency, measured_latency_ratio
from balf.pipeline.sequential import LayerSequential
from balf.pipeline.strategy import CalibrationStrategy, InstallPlan, StrategyRunner, WholeModel

__all__ = [
    "BlockByBlock",
    "CalibrationStrategy",
    "CompressionContext",
    "Compressor",
    "DataOptions",
    "InstallPlan",
    "LatencyFit",
    "LayerSequential",
    "StrategyRunner",
    "WholeModel",
    "compress",
    "compress_to_latency",
    "measured_latency_ratio",
]
