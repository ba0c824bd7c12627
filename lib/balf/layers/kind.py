"""The layer-kind protocol and its one registry.

A :class:`LayerKind` is everything balf knows about one dense layer type: whether a given module
can be factorized (and why not), its ``(G, D, K)`` geometry, its weight as ``(G, D, K)`` matrices,
the row matrices and Gram matrices of one call's input and output, how to build the low-rank
replacement from factors, and that replacement's save spec. The rest of the library looks the
kind up by the module's type (nearest registered class in its MRO) or, for a saved layer, by
name, and never branches on the layer kind.
"""

from __future__ import annotations

import copy
import logging
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from balf._eval_mode import steady_parametrizations
from balf.errors import BALFError
from balf.layers.geometry import LayerGeometry
from balf.layers.optional import register_optional

__all__ = [
    "LayerKind",
    "add_kind_resolver",
    "kind_for",
    "kind_name_of_class",
    "kind_named",
    "kind_of_lowrank",
    "layer_kinds",
    "register_layer_kind",
    "registered_types",
]

log = logging.getLogger(__name__)

class LayerKind:
    """One dense layer type: how it computes ``O(I(X) · P(W))`` (method §1), its low-rank
    replacement, and that replacement's save spec. Registered once with
    :func:`register_layer_kind`; the rest of the library looks the kind up by the module's type
    (nearest registered class in its MRO) or, for a saved layer, by :attr:`name`.

    Class attributes:
        name: the kind's unique name, written in save specs and shown in reports.
        dense_type: the module type it factorizes (and its subclasses without a kind).
        lowrank_type: the replacement's class; it provides ``dense_spec(dense)``, ``spec()`` and
            ``from_spec(spec, device, dtype)`` (as :class:`balf.LowRankLinear` does).
        token_rows: whether the rows are the vectors of every leading position of the input
            and output (``(B, L, D)`` → ``B·L`` rows, as for ``nn.Linear``): a padding mask
            ``(B, L)`` then selects the rows of real tokens (``False``: convolutions, whose
            rows are pixels).

    Subclasses implement :meth:`geometry`, :meth:`weight_matrices`, :meth:`output_rows`,
    :meth:`input_rows` and :meth:`build`; the Gram matrices, rows per call and support check
    have generic defaults that a kind overrides when it knows better (no im2col copy, a
    padding mode it cannot express, …). The dense weight is reached through :meth:`weight`
    (default ``module.weight``); its save spec through :meth:`dense_spec` (default: the
    low-rank class's reading of the dense layer's hyper-parameters).
    """

    name: ClassVar[str]
    dense_type: ClassVar[type[nn.Module]]
    lowrank_type: ClassVar[type[nn.Module]]
    token_rows: ClassVar[bool] = False

    def weight(self, module: nn.Module) -> Tensor:
        """The dense layer's weight (its device, dtype and contents identify it).

        Read with the layer's parametrizations in eval mode (a spectral_norm in train mode
        would otherwise advance its power iteration, changing the caller's model); kinds that
        override this read through :func:`balf._eval_mode.steady_parametrizations` as well.
        """
        with steady_parametrizations(module):
            return module.weight

    def unsupported_reason(self, module: nn.Module) -> str | None:
        """Why this particular module cannot be factorized, or ``None`` when it can."""
        return None

    def geometry(self, module: nn.Module) -> LayerGeometry:
        """The layer's ``(G, D, K)``."""
        raise NotImplementedError

    def weight_matrices(self, module: nn.Module) -> Tensor:
        """The weight as ``G`` matrices ``W_g``, ``(G, D, K)`` (a view when possible)."""
        raise NotImplementedError

    def output_rows(self, module: nn.Module, output: Tensor) -> Tensor:
        """Pre-bias outputs of one call as row matrices ``Y_g``, ``(G, N, K)``."""
        raise NotImplementedError

    def input_rows(self, module: nn.Module, x: Tensor) -> Iterator[Tensor]:
        """The input of one call as ``(G, n, D)`` chunks whose rows together form ``X_g``."""
        raise NotImplementedError

    def build(self, module: nn.Module, a: Tensor, b: Tensor) -> nn.Module:
        """The low-rank replacement from factors ``A`` ``(G, D, r)`` and ``B`` ``(G, r, K)``.

        The factors may be in any dtype/device; the result has the dense layer's dtype, device
        and bias, and computes ``Σ`` over groups of ``X_g A_g B_g`` plus the bias.
        """
        raise NotImplementedError

    def output_gram(self, module: nn.Module, output: Tensor, dtype: torch.dtype) -> Tensor:
        """``Y_gᵀ Y_g`` of one call's pre-bias output, ``(G, K, K)`` in ``dtype``."""
        rows = self.output_rows(module, output.to(dtype))
        return rows.transpose(1, 2) @ rows

    def input_gram(self, module: nn.Module, x: Tensor, dtype: torch.dtype) -> Tensor:
        """``X_gᵀ X_g`` of one call's input, ``(G, D, D)`` in ``dtype``."""
        gram = None
        for rows in self.input_rows(module, x.to(dtype)):
            part = torch.bmm(rows.transpose(1, 2), rows)
            gram = part if gram is None else gram + part
        return gram

    def rows_of_call(self, module: nn.Module, output: Tensor) -> int:
        """Rows ``N`` (per group) one call contributes: the number of output vectors."""
        geo = self.geometry(module)
        return output.numel() // (geo.groups * geo.out_dim)

    # -- the replacement and its save spec ------------------------------------------------

    def dense_spec(self, module: nn.Module) -> dict[str, Any]:
        """The dense layer's hyper-parameters, JSON-serialisable (compared on load)."""
        return self.lowrank_type.dense_spec(module)

    def replace(self, module: nn.Module, a: Tensor, b: Tensor) -> nn.Module:
        """:meth:`build`, the result labelled with this kind (what :func:`balf.save` records)."""
        return self._label(self.build(module, a, b))

    def empty(
        self,
        entry: Mapping[str, Any],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> nn.Module:
        """An uninitialised replacement of the shape a save-spec ``entry`` describes."""
        return self._label(self.lowrank_type.from_spec(dict(entry), device=device, dtype=dtype))

    def for_type(self, module_type: type[nn.Module]) -> LayerKind:
        """This kind for another dense type (e.g. a subclass known to compute the same)."""
        kind = copy.copy(self)
        kind.dense_type = module_type
        return kind

    def _label(self, layer: nn.Module) -> nn.Module:
        if getattr(layer, "kind", None) != self.name:
            layer.kind = self.name  # an instance attribute: one low-rank class, several kinds
        return layer


_BY_TYPE: dict[type[nn.Module], LayerKind] = {}
_BY_NAME: dict[str, LayerKind] = {}


def register_layer_kind(kind: LayerKind) -> LayerKind:
    """Make ``kind.dense_type`` (and its subclasses without a kind of their own) factorizable,
    savable, reloadable and timeable.

    Args:
        kind: a :class:`LayerKind` instance; replaces an earlier kind of the same dense type.

    Returns:
        ``kind``.

    Raises:
        TypeError: ``kind`` is not a ``LayerKind`` instance or lacks ``name``/``dense_type``/
            ``lowrank_type``.
        BALFError: ``kind.name`` is taken by a kind of another dense type.

    Example:
        >>> balf.register_layer_kind(MyLayerKind())
    """
    if isinstance(kind, type):
        return _register_lowrank_class(kind)
    if not isinstance(kind, LayerKind):
        raise TypeError(f"expected a LayerKind instance, got {kind!r}")
    missing = [a for a in ("name", "dense_type", "lowrank_type") if not hasattr(kind, a)]
    if missing:
        raise TypeError(f"{type(kind).__name__} lacks {', '.join(missing)}; see balf.LayerKind")
    if not (isinstance(kind.dense_type, type) and issubclass(kind.dense_type, nn.Module)):
        raise TypeError(f"dense_type must be an nn.Module subclass, got {kind.dense_type!r}")
    other = _BY_NAME.get(kind.name)
    shared = other is not None and type(other) is type(kind)  # one kind, several dense types
    if other is not None and other.dense_type is not kind.dense_type and not shared:
        raise BALFError(
            f"layer kind {kind.name!r} is already registered for {other.dense_type.__name__}; "
            "pick another name"
        )
    previous = _BY_TYPE.get(kind.dense_type)
    if previous is not None:
        log.debug("replacing the layer kind of %s", kind.dense_type.__name__)
        if _BY_NAME.get(previous.name) is previous:
            del _BY_NAME[previous.name]
    _BY_TYPE[kind.dense_type] = kind
    if kind.name not in _BY_NAME or _BY_NAME[kind.name].dense_type is kind.dense_type:
        _BY_NAME[kind.name] = kind
    return kind


_RESOLVERS: list[Callable[[type], object]] = []
# types every resolver has seen: a resolver answers once per type (a type's defining module is
# loaded by the time the type exists, so a later call would answer the same)
_RESOLVED: weakref.WeakSet[type] = weakref.WeakSet()


def add_kind_resolver(resolver: Callable[[type], object]) -> None:
    """Call ``resolver(module_type)`` on the first look-up of each type: it may register a kind
    for a type recognised on sight (e.g. a known third-party conv that pads in forward).

    Each resolver sees each type once (adding a resolver shows it every type again), not once
    per look-up: the look-ups run in every forward hook of every calibration batch.
    """
    if resolver not in _RESOLVERS:
        _RESOLVERS.append(resolver)
        _RESOLVED.clear()


def kind_for(module: nn.Module) -> LayerKind | None:
    """The kind registered for the nearest class in ``type(module)``'s MRO, or ``None``."""
    return _kind_for_type(type(module))


def _kind_for_type(module_type: type) -> LayerKind | None:
    register_optional()
    if module_type not in _RESOLVED:
        for resolver in _RESOLVERS:
            resolver(module_type)
        _RESOLVED.add(module_type)
    for cls in module_type.__mro__:
        kind = _BY_TYPE.get(cls)
        if kind is not None:
            return kind
    return None


def kind_named(name: str) -> LayerKind | None:
    """The kind registered under ``name`` (a save spec's ``"kind"``), or ``None``."""
    register_optional()
    return _BY_NAME.get(name)


def kind_name_of_class(lowrank_type: type[nn.Module]) -> str | None:
    """The name of the first registered kind whose replacement is exactly ``lowrank_type``
    (the name a low-rank layer built directly, not by a kind, goes by), or ``None``."""
    register_optional()
    return next((k.name for k in _BY_NAME.values() if k.lowrank_type is lowrank_type), None)


def kind_of_lowrank(module: nn.Module) -> LayerKind | None:
    """The kind that made the low-rank ``module`` (``None``: not a registered replacement)."""
    name = getattr(module, "kind", None)
    kind = kind_named(name) if isinstance(name, str) else None
    if kind is not None and isinstance(module, kind.lowrank_type):
        return kind
    return None


def layer_kinds() -> dict[str, LayerKind]:
    """Every registered kind by name, in registration order (third-party kinds included once
    their package is imported, see :mod:`balf.layers.optional`)."""
    register_optional()
    return dict(_BY_NAME)


def registered_types() -> tuple[type[nn.Module], ...]:
    """The dense module types that have a kind, in registration order."""
    register_optional()
    return tuple(_BY_TYPE)


# -- the names of balf <= 0.x, kept for one release -------------------------------------------


def register_layer_adapter(module_type: type[nn.Module], adapter: LayerKind) -> LayerKind:
    """Deprecated: give a :class:`LayerKind` its ``dense_type``; :func:`register_layer_kind`."""
    warnings.warn(
        "balf.register_layer_adapter(type, adapter) is deprecated; give the LayerKind subclass "
        "name, dense_type and lowrank_type and call balf.register_layer_kind(kind)",
        DeprecationWarning,
        stacklevel=2,
    )
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be an nn.Module subclass, got {module_type!r}")
    if not isinstance(adapter, LayerKind):
        raise TypeError(f"adapter must be a LayerKind instance, got {adapter!r}")
    adapter.dense_type = module_type
    if not hasattr(adapter, "name"):
        adapter.name = module_type.__name__.lower()
    if not hasattr(adapter, "lowrank_type"):
        adapter.lowrank_type = nn.Module  # factorizes; save/load needs a real lowrank_type
    return register_layer_kind(adapter)


def _register_lowrank_class(cls: type[nn.Module]) -> LayerKind:
    """Deprecated form ``register_layer_kind(LowRankClass)``: a kind with the maths of
    ``cls.dense_type``'s kind and ``cls`` as its replacement, found by name only."""
    warnings.warn(
        "balf.register_layer_kind(LowRankClass) is deprecated; register a LayerKind instance",
        DeprecationWarning,
        stacklevel=3,
    )
    needed = ("kind", "dense_type", "dense_spec", "spec", "from_spec")
    missing = [m for m in needed if not hasattr(cls, m)]
    if "kind" not in missing and not isinstance(cls.kind, str):
        missing.insert(0, "kind (a class attribute naming it)")
    if missing:
        raise BALFError(f"{cls.__name__} cannot be registered: it lacks {', '.join(missing)}")
    other = _BY_NAME.get(cls.kind)
    if other is not None and other.lowrank_type is not cls:
        raise BALFError(
            f"layer kind {cls.kind!r} is already registered by {other.lowrank_type.__name__}; "
            "pick another name"
        )
    maths = _kind_for_type(cls.dense_type)
    kind = copy.copy(maths) if maths is not None else LayerKind()
    kind.name, kind.dense_type, kind.lowrank_type = cls.kind, cls.dense_type, cls
    _BY_NAME[kind.name] = kind  # by name only: the dense type keeps its own kind
    return kind
