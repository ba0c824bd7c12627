"""The registry of low-rank layer kinds: which class saves, loads and times each dense type.

A low-rank layer class hooks in with :func:`register_layer_kind` when it provides ``kind`` (a
name), ``dense_type`` (the layer it replaces), ``dense_spec(dense)`` (that layer's
hyper-parameters), ``spec()`` and ``from_spec(spec, device, dtype)`` (see
:class:`balf.LowRankLinear`). Lookups go by type: :func:`kind_class` finds the registered class
of a low-rank module, :func:`class_for_dense` the class that replaces a dense one.
"""

from __future__ import annotations

from torch import nn

from balf.errors import BALFError
from balf.layers import LowRankConv1d, LowRankConv2d, LowRankLinear
from balf.layers.padded_lowrank import PaddedLowRankConv2d

__all__ = ["class_for_dense", "kind_class", "layer_kinds", "register_layer_kind"]

_KINDS: dict[str, type[nn.Module]] = {}


def register_layer_kind(cls: type[nn.Module]) -> type[nn.Module]:
    """Make a low-rank layer class savable and loadable (usable as a class decorator).

    The class must define ``kind`` (unique name), ``dense_type``, ``dense_spec(dense)``,
    ``spec()`` and the classmethod ``from_spec(spec, device=None, dtype=None)``.

    Raises:
        BALFError: a member is missing, or ``kind`` is taken by another class.
    """
    missing = [
        m for m in ("kind", "dense_type", "dense_spec", "spec", "from_spec") if not hasattr(cls, m)
    ]
    if missing:
        raise BALFError(f"{cls.__name__} cannot be registered: it lacks {', '.join(missing)}")
    other = _KINDS.get(cls.kind)
    if other is not None and other is not cls:
        raise BALFError(
            f"layer kind {cls.kind!r} is already registered by {other.__name__}; pick another name"
        )
    _KINDS[cls.kind] = cls
    return cls


def layer_kinds() -> dict[str, type[nn.Module]]:
    """The registered low-rank layer classes by kind name."""
    return dict(_KINDS)


register_layer_kind(LowRankLinear)
register_layer_kind(LowRankConv2d)
register_layer_kind(LowRankConv1d)
register_layer_kind(PaddedLowRankConv2d)


def kind_class(module: nn.Module) -> type[nn.Module] | None:
    """The registered low-rank class ``module`` is an instance of (``None``: not low-rank)."""
    for cls in type(module).__mro__:
        if cls in _KINDS.values():
            return cls
    return None


def class_for_dense(dense: nn.Module) -> type[nn.Module] | None:
    """The registered low-rank class that replaces ``dense``: a class whose ``matches(dense)``
    says so (e.g. a conv that pads in forward), then exact ``dense_type``, then a subclass match
    (``None``: no kind for this type)."""
    for cls in _KINDS.values():
        matches = getattr(cls, "matches", None)
        if matches is not None and matches(dense):
            return cls
    for cls in _KINDS.values():
        if type(dense) is cls.dense_type:
            return cls
    for cls in _KINDS.values():
        if isinstance(dense, cls.dense_type):
            return cls
    return None
