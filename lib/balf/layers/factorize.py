"""Factorizing one layer: its rank-r low-rank replacement from a decomposition."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn

from balf._eval_mode import steady_parametrizations
from balf.layers.dispatch import kind_of, weight_matrices

__all__ = ["Factorization", "factorize_layer"]


class Factorization(Protocol):
    """What a layer is factorized from: a :class:`balf.LayerDecomposition` (or anything with
    its ``factors`` method)."""

    def factors(self, weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
        """``(A, B)``: ``(G, D, rank)`` and ``(G, rank, K)`` factors of ``weight`` ``(G, D, K)``."""
        ...


def factorize_layer(module: nn.Module, decomposition: Factorization, rank: int) -> nn.Module:
    """The rank-``rank`` factorized replacement of a supported layer, in its dtype and device.

    Unlike :func:`compress`, this always factorizes, even where the low-rank layer is not cheaper
    (useful to study errors at every rank).

    Args:
        module: the dense layer.
        decomposition: its :func:`balf.decompose_layer` result (activation-aware or plain SVD).
        rank: 1 ≤ rank ≤ ``decomposition.max_rank``.

    Returns:
        What the layer's kind builds: a :class:`LowRankLinear`, :class:`LowRankConv2d` or
        :class:`LowRankConv1d` for the built-in kinds.

    Example:
        >>> stats = balf.collect_statistics(layer, x)
        >>> small = balf.factorize_layer(layer, balf.decompose_layer(layer, stats.layers[""]), 8)
    """
    with steady_parametrizations(module):  # the kind's build reads the weight's dtype too
        w = weight_matrices(module)
        a, b = decomposition.factors(w, rank)
        kind = kind_of(module)
        small = kind.replace(module, a, b)
        _match_requires_grad(module, kind.weight(module), small)
    return small


def _match_requires_grad(dense: nn.Module, weight: Tensor, small: nn.Module) -> None:
    """The factors follow the dense weight's ``requires_grad``, the bias the dense bias's (a
    frozen layer stays frozen)."""
    bias = getattr(dense, "bias", None)
    for name, p in small.named_parameters():
        source = bias if name.rpartition(".")[2] == "bias" and bias is not None else weight
        p.requires_grad_(source.requires_grad)
