"""The layer-adapter protocol and the table of adapters keyed by module type.

A :class:`LayerAdapter` is everything balf knows about one layer type: whether a given module
can be factorized (and why not), its ``(G, D, K)`` geometry, its weight as ``(G, D, K)`` matrices,
the row matrices and Gram matrices of one call's input and output, and how to build the
low-rank replacement from factors. The rest of the library looks the adapter up by the module's
type (nearest registered class in its MRO) and never branches on the layer kind.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from balf.layers.geometry import LayerGeometry

__all__ = ["LayerAdapter", "adapter_for", "register_layer_adapter", "registered_types"]

log = logging.getLogger(__name__)

_ADAPTERS: dict[type[nn.Module], LayerAdapter] = {}


class LayerAdapter:
    """How one layer type computes ``O(I(X) · P(W))`` (method §1), and how to replace it.

    Subclasses implement :meth:`geometry`, :meth:`weight_matrices`, :meth:`output_rows`,
    :meth:`input_rows` and :meth:`build`; the Gram matrices, rows per call and support check
    have generic defaults that an adapter overrides when it knows better (no im2col copy, a
    padding mode it cannot express, …). The module must keep its weight in ``module.weight``
    and its (optional) bias in ``module.bias``, added after the product.
    """

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


def register_layer_adapter(module_type: type[nn.Module], adapter: LayerAdapter) -> LayerAdapter:
    """Make ``module_type`` (and its subclasses without an adapter of their own) factorizable.

    Args:
        module_type: a ``nn.Module`` subclass, e.g. ``nn.Conv1d``.
        adapter: the :class:`LayerAdapter` describing it; replaces any earlier registration.

    Returns:
        ``adapter``.

    Example:
        >>> balf.register_layer_adapter(MyLayer, MyLayerAdapter())
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be an nn.Module subclass, got {module_type!r}")
    if not isinstance(adapter, LayerAdapter):
        raise TypeError(f"adapter must be a LayerAdapter instance, got {adapter!r}")
    if module_type in _ADAPTERS:
        log.debug("replacing the layer adapter of %s", module_type.__name__)
    _ADAPTERS[module_type] = adapter
    return adapter


def adapter_for(module: nn.Module) -> LayerAdapter | None:
    """The adapter registered for the nearest class in ``type(module)``'s MRO, or ``None``."""
    from balf.layers.optional import register_optional

    register_optional()
    for cls in type(module).__mro__:
        adapter = _ADAPTERS.get(cls)
        if adapter is not None:
            return adapter
    return None


def registered_types() -> tuple[type[nn.Module], ...]:
    """The module types that have an adapter, in registration order."""
    return tuple(_ADAPTERS)
