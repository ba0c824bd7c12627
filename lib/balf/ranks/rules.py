"""Per-layer rank rules of the baselines (method §6)."""

from __future__ import annotations

import math

import numpy as np

from balf.layers.geometry import LayerGeometry

__all__ = ["energy_threshold_rank", "rank_ratio_rank", "uniform_rank"]


def energy_threshold_rank(energies: np.ndarray, threshold: float) -> int:
    """Smallest r with ``e(r) ≥ threshold``; ``energies`` is ``(R,)`` with ``e(R) = 1``."""
    return min(int(np.searchsorted(energies, threshold, side="left")) + 1, len(energies))


def uniform_rank(geometry: LayerGeometry, ratio: float) -> int:
    """Smallest r with ``r·(D+K)/(D·K) ≥ ratio`` (the same cost fraction in every layer)."""
    d, k = geometry.in_dim, geometry.out_dim
    r = math.ceil(ratio * d * k / (d + k) - 1e-9)
    return max(1, min(r, geometry.max_rank))


def rank_ratio_rank(geometry: LayerGeometry, ratio: float) -> int:
    """``r = ⌈ratio·R⌉``."""
    return max(1, min(math.ceil(ratio * geometry.max_rank - 1e-9), geometry.max_rank))
