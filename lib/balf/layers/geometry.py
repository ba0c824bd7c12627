"""The ``(G, D, K)`` shape of a layer seen as a batch of matrix products (method §1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["SIDES", "LayerGeometry", "Side"]

Side = Literal["input", "output"]
"""Which Gram matrix statistics accumulate: ``X_gᵀX_g`` (D×D) or ``Y_gᵀY_g`` (K×K)."""
SIDES: tuple[str, ...] = get_args(Side)


@dataclass(frozen=True)
class LayerGeometry:
    """Shape of a layer seen as ``G`` products ``(N×D) · (D×K)``.

    Attributes:
        kind: display label of the layer kind (``"linear"``, ``"conv2d"``, ``"conv1d"``, …),
            set by its :class:`balf.LayerKind`; code never branches on it.
        groups: G, number of independent matrix products.
        in_dim: D, inputs per group (``in_features`` or ``C_in/g·kh·kw``).
        out_dim: K, outputs per group (``out_features`` or ``C_out/g``).
    """

    kind: str
    groups: int
    in_dim: int
    out_dim: int

    @property
    def max_rank(self) -> int:
        """R = min(D, K)."""
        return min(self.in_dim, self.out_dim)

    @property
    def dense_params(self) -> int:
        """Weight entries of the dense layer, ``G·D·K`` (bias excluded: it is kept as is)."""
        return self.groups * self.in_dim * self.out_dim

    def lowrank_params(self, rank: int) -> int:
        """Weight entries of the two factor layers at ``rank``, ``G·r·(D+K)``."""
        return self.groups * rank * (self.in_dim + self.out_dim)

    def is_cheaper(self, rank: int) -> bool:
        """Whether ``rank`` costs strictly less than the dense layer (params and MACs alike)."""
        return self.lowrank_params(rank) < self.dense_params

    def preferred_side(self) -> Side:
        """The cheaper statistics side: ``"input"`` (D×D Gram, via im2col) only when D < K."""
        return "input" if self.in_dim < self.out_dim else "output"
