"""The orchestration wing: one compression pipeline over every calibration strategy.

:mod:`.compressor` (:class:`Compressor`, :func:`compress`) runs the pipeline — candidates, rank
selection, copy, installation, report, counts — once for every strategy; :mod:`.strategy` defines
the strategy protocol and :class:`WholeModel`, :mod:`.block_by_block` and :mod:`.block_runner`
:class:`BlockByBlock`; :mod:`.context` holds what a compressor measures once
(:class:`CompressionContext`, what budget metrics and objectives receive); :mod:`.baseline`,
:mod:`.install`, :mod:`.shape_check`, :mod:`.cached` and :mod:`.input_checks` are its steps.
This folder sits above every other folder of ``balf`` (see ``docs/architecture.md``).
"""

from balf.pipeline.block_by_block import BlockByBlock
from balf.pipeline.compressor import Compressor, compress
from balf.pipeline.context import CompressionContext, DataOptions
from balf.pipeline.strategy import CalibrationStrategy, InstallPlan, StrategyRunner, WholeModel

__all__ = [
    "BlockByBlock",
    "CalibrationStrategy",
    "CompressionContext",
    "Compressor",
    "DataOptions",
    "InstallPlan",
    "StrategyRunner",
    "WholeModel",
    "compress",
]
