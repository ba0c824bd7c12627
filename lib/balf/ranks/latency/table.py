"""Measured latencies and the latency cost model of ``metric="latency"`` budgets.

A :class:`LayerLatency` holds one layer's measured seconds, dense and factorized at a grid of
ranks (linear in between, non-decreasing in the rank); a :class:`LatencyTable` those of every
chosen layer and of the whole model; a :class:`LatencyCost` is the layer's cost model the
allocator sees, ``c(r) = min(latency_lowrank(r), latency_dense)`` for r = 1..R, shape ``(R,)``.
Measuring them is :func:`balf.ranks.latency.measure_latency`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from balf.errors import BALFError, BudgetError
from balf.ranks.costs import (
    BudgetMetric,
    LayerCandidate,
    LayerCost,
    register_metric,
)

__all__ = [
    "LatencyCost",
    "LatencyMetric",
    "LatencyTable",
    "LayerLatency",
    "allowed_ranks",
    "layer_keep_ratio",
    "with_latency_costs",
]


@dataclass(frozen=True)
class LayerLatency:
    """Measured seconds of one layer's call: dense, and factorized at a grid of ranks.

    Attributes:
        dense: seconds of the dense layer.
        ranks: measured ranks, ascending.
        lowrank: seconds of the factorized layer at ``ranks``.
    """

    dense: float
    ranks: list[int]
    lowrank: list[float]

    def __post_init__(self) -> None:
        if len(self.ranks) != len(self.lowrank):
            raise BALFError("LayerLatency needs one low-rank latency per measured rank")
        if list(self.ranks) != sorted(set(self.ranks)):
            raise BALFError(f"LayerLatency ranks must be increasing, got {self.ranks}")

    def lowrank_at(self, ranks: np.ndarray | int) -> np.ndarray:
        """Latency of the factorized layer at ``ranks``: linear between measured ranks,
        constant beyond the ends, non-decreasing in the rank (running maximum of the grid)."""
        if not self.ranks:
            return np.full(np.shape(ranks), np.inf)
        monotone = np.maximum.accumulate(np.asarray(self.lowrank, dtype=np.float64))
        return np.interp(np.asarray(ranks, dtype=np.float64), self.ranks, monotone)


@dataclass
class LatencyTable:
    """Measured latencies of a model's chosen layers (and of the whole model).

    Attributes:
        layers: per layer name, its :class:`LayerLatency`.
        model: seconds of the whole dense model (``None``: budgets refer to the layers alone).
        key: what the measurements depend on (device, threads, dtype, batch size, version).
    """

    layers: dict[str, LayerLatency]
    model: float | None = None
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def fixed(self) -> float:
        """Seconds of the model outside the chosen layers, ``max(0, T − Σ dense)``."""
        if self.model is None:
            return 0.0
        return max(0.0, self.model - sum(lat.dense for lat in self.layers.values()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable."""
        return {
            "layers": {n: asdict(lat) for n, lat in self.layers.items()},
            "model": self.model,
            "key": self.key,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        """Inverse of :meth:`to_dict`."""
        layers = {n: LayerLatency(**v) for n, v in data["layers"].items()}
        return cls(layers, data.get("model"), dict(data.get("key", {})))


@dataclass(frozen=True)
class LatencyCost(LayerCost):
    """A layer's cost model with its measured latencies (``metric="latency"``).

    Attributes:
        latency: the layer's measured latencies.
        fixed: seconds of the model outside the chosen layers (see :attr:`LatencyTable.fixed`).
    """

    latency: LayerLatency | None = None
    fixed: float = 0.0

    @classmethod
    def of(cls, cost: LayerCost, latency: LayerLatency, fixed: float = 0.0) -> LatencyCost:
        """``cost`` with ``latency`` attached."""
        return cls(cost.geometry, cost.rows_per_sample, latency, fixed)

    def _lowrank_seconds(self, ranks: np.ndarray) -> np.ndarray:
        geo = self.geometry
        seconds = self.latency.lowrank_at(ranks)
        # ranks at which the factorization has at least as many weights are never installed
        return np.where(
            geo.groups * ranks * (geo.in_dim + geo.out_dim) < geo.dense_params, seconds, np.inf
        )

    def is_cheaper(self, rank: int) -> bool:
        """Whether the factorized layer at ``rank`` is smaller *and* measured faster."""
        seconds = float(self._lowrank_seconds(np.array([rank]))[0])
        return self.geometry.is_cheaper(rank) and seconds < self.latency.dense


class LatencyMetric(BudgetMetric):
    """Seconds per call measured on the target device (``BALFConfig(ratio, metric="latency")``).

    The ratio is of the *whole model's* measured latency: :meth:`prepare` measures (or takes)
    the :class:`LatencyTable` through the compression's context, and :meth:`layer_keep_ratio`
    turns the requested ratio into one of the chosen layers' summed latency.
    """

    name = "latency"

    @staticmethod
    def _latency(cost: LayerCost) -> LatencyCost:
        if not isinstance(cost, LatencyCost) or cost.latency is None:
            raise BALFError(
                'metric="latency" needs measured latencies: compress with a balf.Compressor '
                "(it measures them, or takes latency=LatencyTable)"
            )
        return cost

    def dense(self, cost) -> float:
        return self._latency(cost).latency.dense

    def lowrank(self, cost, ranks: np.ndarray) -> np.ndarray:
        return np.asarray(self._latency(cost).latency.lowrank_at(ranks), dtype=np.float64)

    def curve(self, cost) -> np.ndarray:
        latency = self._latency(cost)
        ranks = np.arange(1, latency.geometry.max_rank + 1, dtype=np.float64)
        return np.minimum(latency._lowrank_seconds(ranks), latency.latency.dense)

    def prepare(self, candidates, context, rank_multiple: int):
        return with_latency_costs(candidates, context.latency_table(rank_multiple))

    def layer_keep_ratio(self, costs, ratio: float) -> float:
        return layer_keep_ratio([self._latency(c) for c in costs], ratio)

    def unreachable(self, costs, ratio: float, reachable: float) -> str | None:
        latencies = [self._latency(c) for c in costs]
        fixed = latencies[0].fixed if latencies else 0.0
        total = fixed + sum(float(self.curve(c)[-1]) for c in latencies)
        smallest = (fixed + reachable) / total
        return (
            f"a latency keep-ratio of {ratio:g} is below the smallest achievable measured "
            f"latency: the cheapest allowed rank in every layer keeps {smallest:.4g} of the "
            f"model's latency; use a ratio >= {smallest:.4g}"
        )


def layer_keep_ratio(costs: Sequence[LatencyCost], ratio: float) -> float:
    """The keep-ratio of the chosen layers' latency that keeps ``ratio`` of the model's.

    ``(ratio·T − F) / S`` with ``S = Σ dense``, ``F`` the fixed part, ``T = S + F``.

    Raises:
        BudgetError: the fixed part alone exceeds ``ratio·T``.
    """
    total = sum(c.latency.dense for c in costs)
    fixed = costs[0].fixed if costs else 0.0
    keep = (ratio * (total + fixed) - fixed) / total
    if keep <= 0:
        share = fixed / (total + fixed)
        raise BudgetError(
            f"a latency keep-ratio of {ratio:g} is unreachable: the layers that are not "
            f"factorized take {share:.3g} of the measured latency; use a ratio above {share:.3g}"
        )
    return min(keep, 1.0)


def allowed_ranks(max_rank: int, rank_multiple: int) -> np.ndarray:
    """Ranks ``r ≤ max_rank`` that are multiples of ``rank_multiple``, plus ``max_rank``."""
    ranks = np.arange(rank_multiple, max_rank + 1, rank_multiple)
    return np.union1d(ranks, [max_rank]).astype(int)


def with_latency_costs(
    candidates: Sequence[LayerCandidate], table: LatencyTable
) -> list[LayerCandidate]:
    """The candidates with their cost models wrapped in :class:`LatencyCost` from ``table``."""
    return [
        dataclasses.replace(c, cost=LatencyCost.of(c.cost, table.layers[c.name], table.fixed))
        for c in candidates
    ]


register_metric(LatencyMetric())
