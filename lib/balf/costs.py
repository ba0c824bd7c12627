"""Cost model of factorized layers (method §3): parameters and MACs as a function of the rank."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from balf.errors import BALFError
from balf.geometry import LayerGeometry
from balf.modes import METRICS, Metric

__all__ = ["METRICS", "LayerCost", "Metric"]


@dataclass(frozen=True)
class LayerCost:
    """Cost of one layer at every rank.

    Attributes:
        geometry: the layer's ``(G, D, K)``.
        rows_per_sample: output vectors per input sample (``H_out·W_out`` or tokens); ``None``
            when unknown (data-free compression), in which case only ``params`` is available.
    """

    geometry: LayerGeometry
    rows_per_sample: float | None = None

    def _scale(self, metric: Metric) -> float:
        if metric not in METRICS:
            raise BALFError(f"metric must be one of {METRICS}, got {metric!r}")
        if metric == "params":
            return 1.0
        if self.rows_per_sample is None:
            raise BALFError("FLOP costs need calibration statistics (output sizes are unknown)")
        return float(self.rows_per_sample)

    def dense(self, metric: Metric) -> float:
        """Cost of the dense layer: weight entries, or MACs per sample (bias excluded)."""
        return self.geometry.dense_params * self._scale(metric)

    def lowrank(self, rank: int, metric: Metric) -> float:
        """Cost of the two factor layers at ``rank``."""
        return self.geometry.lowrank_params(rank) * self._scale(metric)

    def curve(self, metric: Metric) -> np.ndarray:
        """``c(r) = min(lowrank(r), dense)`` for r = 1..R, shape ``(R,)`` float64."""
        ranks = np.arange(1, self.geometry.max_rank + 1, dtype=np.float64)
        geo = self.geometry
        lowrank = geo.groups * ranks * (geo.in_dim + geo.out_dim)
        return np.minimum(lowrank, geo.dense_params) * self._scale(metric)

    def is_cheaper(self, rank: int) -> bool:
        """Whether a factorized layer is installed at ``rank`` (strictly fewer weights)."""
        return self.geometry.is_cheaper(rank)

    def realised(self, rank: int, metric: Metric) -> float:
        """Cost of what is installed at ``rank``: low-rank only where strictly cheaper."""
        if self.is_cheaper(rank):
            return self.lowrank(rank, metric)
        return self.dense(metric)
