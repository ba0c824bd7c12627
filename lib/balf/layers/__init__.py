"""Layer kinds: what balf knows about each factorizable dense layer type, in one registry.

Built in: ``nn.Linear`` (:mod:`.linear`), ``nn.Conv2d`` (:mod:`.conv2d`), ``nn.Conv1d``
(:mod:`.conv1d`). A new kind is one :class:`LayerKind` subclass (its maths, its low-rank module
and that module's save spec) registered with :func:`register_layer_kind` (see the README's
"Extending balf"). The low-rank modules are in :mod:`.lowrank`, the ``(G, D, K)`` view of a layer
in :mod:`.geometry`, look-ups by module in :mod:`.dispatch`, the choice of layers in
:mod:`.selection`.
"""

from balf.layers import (  # noqa: F401  (built-in kinds register themselves)
    conv1d,
    conv2d,
    linear,
    padded_conv2d,
)
from balf.layers._conv import Conv2dView, ConvKind
from balf.layers.kind import (
    LayerKind,
    kind_for,
    kind_named,
    kind_of_lowrank,
    layer_kinds,
    register_layer_kind,
    registered_types,
)
from balf.layers.lowrank import LowRankConv1d, LowRankConv2d, LowRankLinear

__all__ = [
    "Conv2dView",
    "ConvKind",
    "LayerKind",
    "LowRankConv1d",
    "LowRankConv2d",
    "LowRankLinear",
    "kind_for",
    "kind_named",
    "kind_of_lowrank",
    "layer_kinds",
    "register_layer_kind",
    "registered_types",
]


def __getattr__(name: str):
    """``LayerAdapter`` (balf 0.1's name of :class:`LayerKind`), with a ``DeprecationWarning``."""
    if name == "LayerAdapter":
        import warnings

        warnings.warn(
            "balf.layers.LayerAdapter is deprecated (balf 0.2): use balf.LayerKind",
            DeprecationWarning,
            stacklevel=2,
        )
        return LayerKind
    raise AttributeError(f"module 'balf.layers' has no attribute {name!r}")
