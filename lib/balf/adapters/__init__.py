"""Layer adapters keyed by module type: what balf knows about each factorizable layer kind.

Built in: ``nn.Linear`` (:mod:`.linear`), ``nn.Conv2d`` (:mod:`.conv2d`), ``nn.Conv1d``
(:mod:`.conv1d`). A new kind is one :class:`LayerAdapter` subclass registered with
:func:`register_layer_adapter` (see the README's "Extending balf").
"""

from balf.adapters import conv1d, conv2d, linear  # noqa: F401  (built-in adapters register themselves)
from balf.adapters._conv import Conv2dView, ConvAdapter
from balf.adapters.base import LayerAdapter, adapter_for, register_layer_adapter, registered_types

__all__ = [
    "Conv2dView",
    "ConvAdapter",
    "LayerAdapter",
    "adapter_for",
    "register_layer_adapter",
    "registered_types",
]
