"""Subclasses of supported layers that compute something else in their own ``forward``.

A layer adapter describes what its registered type computes. A subclass that overrides
``forward`` (or ``_conv_forward``) may compute something else — pad its input (TensorFlow
"SAME" ports), standardise its weight, add noise — and factorizing it as its base class would
drop that silently. Such a subclass is factorized only when balf knows what it computes: it has
an adapter registered for its own type, or it is a known padding-in-forward conv
(:mod:`balf.layers.conv_padding`); otherwise it is kept dense with the reason.
"""

from __future__ import annotations

from torch import nn

from balf.layers.kind import registered_types
from balf.layers.conv_padding import register_known

__all__ = ["override_reason"]

# The methods whose behaviour a layer adapter assumes to be its registered type's.
_BEHAVIOUR_METHODS = ("forward", "_conv_forward")


def _registered_base(cls: type) -> type | None:
    registered = set(registered_types())
    return next((c for c in cls.__mro__ if c in registered), None)


def _overridden(cls: type, base: type) -> list[str]:
    return [m for m in _BEHAVIOUR_METHODS if getattr(cls, m, None) is not getattr(base, m, None)]


def override_reason(module: nn.Module) -> str | None:
    """Why ``module``'s class cannot be factorized as its registered base class, or ``None``.

    A known padding-in-forward class is registered on the way (its adapter then applies).
    """
    cls = type(module)
    base = _registered_base(cls)
    if base is None or base is cls:
        return None
    methods = _overridden(cls, base)
    if not methods:
        return None
    if register_known(cls):
        return None
    return (
        f"{cls.__name__} overrides {', '.join(methods)} of {base.__name__}, so it may compute "
        f"something else than a plain {base.__name__} (padding in forward, a transformed "
        "weight, ...); kept dense. If it only pads its input, declare it with "
        "balf.register_padded_conv; otherwise register an adapter for it "
        "(balf.register_layer_adapter)"
    )
