"""Layers as batches of matrix products (method §1), dispatched by module type.

A supported layer computes, before its bias, ``O(I(X) · P(W))``: a batch of ``G`` products of an
``N×D`` input matrix with a ``D×K`` weight matrix. The functions here look up the layer's
:class:`~balf.layers.LayerAdapter` (by the module's type) for its geometry ``(G, D, K)``, its
weight as ``(G, D, K)`` matrices, and the ``(G, N, D)`` / ``(G, N, K)`` row matrices and Gram
matrices of one call's input or output.

Built in: ``nn.Linear`` (any leading dims), ``nn.Conv2d`` and ``nn.Conv1d`` with any stride,
padding (ints, tuples, ``'same'``, ``'valid'``), dilation and groups, with
``padding_mode='zeros'``. Others: :func:`balf.register_layer_adapter`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from balf.layers import LayerAdapter, adapter_for, registered_types
from balf.layers.geometry import LayerGeometry
from balf.layers.overrides import override_reason

__all__ = [
    "LayerGeometry",
    "adapter_of",
    "geometry_of",
    "input_gram",
    "input_rows",
    "output_gram",
    "output_rows",
    "rows_of_call",
    "unsupported_reason",
    "weight_matrices",
]


def unsupported_reason(module: nn.Module) -> str | None:
    """Why ``module`` cannot be factorized, or ``None`` when it can."""
    adapter = adapter_for(module)
    if adapter is None:
        known = ", ".join(t.__name__ for t in registered_types())
        return (
            f"unsupported layer type {type(module).__name__} (layer adapters exist for {known}; "
            "see balf.register_layer_adapter)"
        )
    reason = override_reason(module)  # may register a known padding-in-forward conv
    if reason is not None:
        return reason
    return adapter_for(module).unsupported_reason(module)


def adapter_of(module: nn.Module) -> LayerAdapter:
    """The adapter of a supported layer.

    Raises:
        TypeError: if the layer is not supported (see :func:`unsupported_reason`).
    """
    reason = unsupported_reason(module)
    if reason is not None:
        raise TypeError(reason)
    return adapter_for(module)


def geometry_of(module: nn.Module) -> LayerGeometry:
    """The ``(G, D, K)`` geometry of a supported layer (``TypeError`` otherwise)."""
    return adapter_of(module).geometry(module)


def weight_matrices(module: nn.Module) -> Tensor:
    """The weight as ``G`` matrices ``W_g`` of shape ``(G, D, K)`` (a view when possible).

    Linear: ``Wᵀ`` with ``G = 1``. Convolutions: group ``g``'s filters, each flattened in
    ``(c, *kernel)`` order — the row order of ``F.unfold`` — and transposed.
    """
    return adapter_of(module).weight_matrices(module)


def output_rows(module: nn.Module, output: Tensor) -> Tensor:
    """Pre-bias outputs of one call as row matrices ``Y_g``.

    Args:
        output: the layer's output, ``(*, K)`` for Linear, ``(B, C_out, H, W)`` for Conv2d.

    Returns:
        ``(G, N, K)`` with ``N`` = number of output vectors (``B·H·W`` for a conv).
    """
    return adapter_of(module).output_rows(module, output)


def input_rows(module: nn.Module, x: Tensor) -> Iterator[Tensor]:
    """The input of one call as row matrices ``X_g``, in memory-bounded chunks.

    Args:
        x: the layer's input, ``(*, D)`` for Linear, ``(B, C_in, H, W)`` for Conv2d.

    Yields:
        ``(G, n, D)`` chunks whose rows together are all ``N`` rows of ``X_g`` (for a conv, the
        im2col patches including zero padding, computed a few images at a time).
    """
    return adapter_of(module).input_rows(module, x)


@torch.no_grad()
def output_gram(module: nn.Module, output: Tensor, dtype: torch.dtype) -> Tensor:
    """``Y_gᵀ Y_g`` of one call's pre-bias output, ``(G, K, K)`` in ``dtype``.

    Equal to ``output_rows(...).mT @ output_rows(...)`` but avoids the row-matrix copy.
    """
    return adapter_of(module).output_gram(module, output, dtype)


@torch.no_grad()
def input_gram(module: nn.Module, x: Tensor, dtype: torch.dtype) -> Tensor:
    """``X_gᵀ X_g`` of one call's input, ``(G, D, D)`` in ``dtype``."""
    return adapter_of(module).input_gram(module, x, dtype)


def rows_of_call(module: nn.Module, output: Tensor) -> int:
    """Number of rows ``N`` (per group) one call contributes: output vectors."""
    return adapter_of(module).rows_of_call(module, output)
