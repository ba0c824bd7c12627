"""balf: Budgeted Activation-aware Low-rank Factorization (arXiv:2509.25136).

Compress a trained network without fine-tuning::

    import balf
    small, report = balf.compress(model, calib_loader, balf.BALFConfig(ratio=0.5))
    print(report.model_flops_ratio)

The package, by concept: :mod:`balf.layers` (layer kinds, low-rank modules), :mod:`balf.calibration`
(statistics), :mod:`balf.decomposition`, :mod:`balf.ranks` (rank rules, allocator, budget
metrics), :mod:`balf.io` (save/load, export, caches), :mod:`balf.report` and, above them all,
:mod:`balf.pipeline` (:class:`Compressor`, the calibration strategies); the folder order is in
``docs/architecture.md``. The paper's reproduction is the separate package ``balf_paper``.
"""

from balf import _deprecated
from balf._version import __version__
from balf.calibration import LayerStatistics, Statistics, collect_statistics
from balf.counting.flops import count_flops, count_params
from balf.decomposition import LayerDecomposition, decompose_layer, decompose_layers
from balf.errors import BALFError, BudgetError, DatasetNotFoundError, StatisticsError
from balf.io import export
from balf.io import hf_hook as _hf_hook
from balf.io.cache import Cache
from balf.io.pretrained import load_pretrained, save_pretrained
from balf.io.serialization import (
    SaveFormatError,
    apply_spec,
    load,
    model_spec,
    read_spec,
    save,
    spec_from_report,
)
from balf.layers import (
    LayerKind,
    LowRankConv1d,
    LowRankConv2d,
    LowRankLinear,
    register_layer_kind,
)
from balf.layers.factorize import factorize_layer
from balf.layers.padded_conv2d import register_padded_conv
from balf.layers.padded_lowrank import PaddedLowRankConv2d
from balf.pipeline import (
    BlockByBlock,
    CompressionContext,
    Compressor,
    LayerSequential,
    WholeModel,
    compress,
    compress_to_latency,
)
from balf.ranks import latency
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
from balf.ranks.costs import BudgetMetric, register_metric
from balf.ranks.modes import Mode, register_modes
from balf.ranks.objectives import (
    DamageObjective,
    EnergyObjective,
    FisherSensitivityObjective,
    LogEnergyObjective,
    LogSensitivityObjective,
    Objective,
    SelectedObjective,
    SensitivityObjective,
    register_objective,
)
from balf.refit import AnchoredRefit
from balf.report import LayerReport, Report

_deprecated.install()
# "balf" in transformers' quantizer registry, without importing transformers (balf.io.hf_hook)
_hf_hook.install()

__all__ = [
    "MODES",
    "AnchoredRefit",
    "DamageObjective",
    "EnergyObjective",
    "FisherSensitivityObjective",
    "LayerSequential",
    "LogEnergyObjective",
    "LogSensitivityObjective",
    "Objective",
    "SelectedObjective",
    "SensitivityObjective",
    "register_objective",
    "BALFConfig",
    "BALFError",
    "BlockByBlock",
    "BudgetError",
    "BudgetMetric",
    "Cache",
    "CompressionConfig",
    "CompressionContext",
    "Compressor",
    "DatasetNotFoundError",
    "EnergyConfig",
    "LayerDecomposition",
    "LayerKind",
    "LayerReport",
    "LayerStatistics",
    "LowRankConv1d",
    "LowRankConv2d",
    "LowRankLinear",
    "Mode",
    "PaddedLowRankConv2d",
    "RankRatioConfig",
    "Report",
    "SaveFormatError",
    "Statistics",
    "StatisticsError",
    "UniformConfig",
    "WholeModel",
    "__version__",
    "apply_spec",
    "collect_statistics",
    "compress",
    "compress_to_latency",
    "config_for_mode",
    "config_from_dict",
    "count_flops",
    "count_params",
    "decompose_layer",
    "decompose_layers",
    "export",
    "factorize_layer",
    "latency",
    "load",
    "load_pretrained",
    "model_spec",
    "read_spec",
    "register_layer_kind",
    "register_metric",
    "register_modes",
    "save",
    "save_pretrained",
    "spec_from_report",
    "register_layer_adapter",
    "register_padded_conv",
]

_DEPRECATED_NAMES = {
    "LayerAdapter": ("balf.layers.kind", "LayerKind"),
    "register_layer_adapter": ("balf.layers.kind", "register_layer_adapter"),
}


def __getattr__(name: str):
    """Names of balf 0.1 that were renamed, with a ``DeprecationWarning``."""
    if name in _DEPRECATED_NAMES:
        import importlib
        import warnings

        module, new = _DEPRECATED_NAMES[name]
        warnings.warn(
            f"balf.{name} is deprecated (balf 0.2): use balf.LayerKind and "
            "balf.register_layer_kind",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), new)
    raise AttributeError(f"module 'balf' has no attribute {name!r}")
