"""balf: Budgeted Activation-aware Low-rank Factorization (arXiv:2509.25136).

Compress a trained network without fine-tuning::

    import balf
    small, report = balf.compress(model, calib_loader, balf.BALFConfig(ratio=0.5))
    print(report.model_flops_ratio)
"""

from balf import export, latency  # noqa: E402, I001  (submodules as attributes: balf.io.export, balf.ranks.latency)
from balf._version import __version__
from balf.layers import LayerAdapter, register_layer_adapter
from balf.compressor import Compressor, compress, factorize_layer
from balf.io.cache import Cache
from balf.layers.conv_padding import register_padded_conv
from balf.ranks.configs import (
    MODES,
    BALFConfig,
    CompressionConfig,
    EnergyConfig,
    RankRatioConfig,
    UniformConfig,
    config_for_mode,
    config_from_dict,
)
from balf.decomposition import LayerDecomposition, decompose_layer
from balf.errors import BALFError, BudgetError, DatasetNotFoundError, StatisticsError
from balf.counting.flops import count_flops, count_params
from balf.layers import LowRankConv1d, LowRankConv2d, LowRankLinear
from balf.layers.padded_lowrank import PaddedLowRankConv2d
from balf.report import LayerReport, Report
from balf.io.serialization import (
    SaveFormatError,
    apply_spec,
    load,
    model_spec,
    read_spec,
    register_layer_kind,
    save,
    spec_from_report,
)
from balf.calibration.collect import LayerStatistics, Statistics, collect_statistics

__all__ = [
    "MODES",
    "BALFConfig",
    "BALFError",
    "BudgetError",
    "Cache",
    "CompressionConfig",
    "Compressor",
    "DatasetNotFoundError",
    "EnergyConfig",
    "LayerAdapter",
    "LayerDecomposition",
    "LayerReport",
    "LayerStatistics",
    "LowRankConv1d",
    "LowRankConv2d",
    "LowRankLinear",
    "PaddedLowRankConv2d",
    "RankRatioConfig",
    "Report",
    "SaveFormatError",
    "Statistics",
    "StatisticsError",
    "UniformConfig",
    "__version__",
    "apply_spec",
    "collect_statistics",
    "compress",
    "config_for_mode",
    "config_from_dict",
    "count_flops",
    "count_params",
    "decompose_layer",
    "export",
    "factorize_layer",
    "latency",
    "load",
    "model_spec",
    "read_spec",
    "register_layer_kind",
    "save",
    "spec_from_report",
    "register_layer_adapter",
    "register_padded_conv",
]
