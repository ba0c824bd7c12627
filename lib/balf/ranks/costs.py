"""Cost model of factorized layers (method §3) and the budget metrics, behind one protocol.

A :class:`BudgetMetric` says what a budget counts: the cost of a layer at every rank, of the
dense layer, and (optionally) what must be measured before the allocator runs. Built in:
``"params"`` (weight entries) and ``"flops"`` (MACs per sample) here, ``"latency"`` (measured
seconds) in :mod:`balf.ranks.latency`. A new metric is one subclass registered with
:func:`register_metric`; ``BALFConfig(ratio, metric=name)`` then budgets it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from balf.errors import BALFError
from balf.layers.geometry import LayerGeometry

__all__ = [
    "BudgetMetric",
    "FlopsMetric",
    "LayerCandidate",
    "LayerCost",
    "ParamsMetric",
    "metric_named",
    "register_metric",
    "registered_metrics",
]


@dataclass(frozen=True)
class LayerCost:
    """What the metrics need of one layer: its shape and how many rows a sample gives it.

    Attributes:
        geometry: the layer's ``(G, D, K)``.
        rows_per_sample: output vectors per input sample (``H_out·W_out`` or tokens); ``None``
            when unknown (data-free compression), in which case only ``params`` is available.
    """

    geometry: LayerGeometry
    rows_per_sample: float | None = None

    def dense(self, metric: str | BudgetMetric) -> float:
        """Cost of the dense layer under ``metric``."""
        return metric_named(metric).dense(self)

    def lowrank(self, rank: int, metric: str | BudgetMetric) -> float:
        """Cost of the two factor layers at ``rank``."""
        return float(metric_named(metric).lowrank(self, np.array([rank]))[0])

    def curve(self, metric: str | BudgetMetric) -> np.ndarray:
        """``c(r) = min(lowrank(r), dense)`` for r = 1..R, shape ``(R,)`` float64."""
        return metric_named(metric).curve(self)

    def is_cheaper(self, rank: int) -> bool:
        """Whether a factorized layer is installed at ``rank`` (strictly fewer weights)."""
        return self.geometry.is_cheaper(rank)

    def realised(self, rank: int, metric: str | BudgetMetric) -> float:
        """Cost of what is installed at ``rank``: low-rank only where strictly cheaper."""
        if self.is_cheaper(rank):
            return self.lowrank(rank, metric)
        return self.dense(metric)


@dataclass(frozen=True)
class LayerCandidate:
    """What a rank rule sees of one layer: its cost model and energy curve ``e(r)`` ``(R,)``.

    Attributes:
        weight: the layer's weight in the allocation objective (1 unless an objective such
            as :class:`balf.ranks.objectives.SensitivityObjective` measured one).
        damage: ``(P, 2)`` measured points ``(lost energy 1 − e(r), divergence of the model's
            output)`` of the layer truncated alone (:class:`balf.ranks.objectives.DamageObjective`;
            ``None``: not measured).
        values: ``(R,)`` the objective's values ``v(r)``, where an objective computed them
            while preparing (:class:`balf.ranks.objectives.SelectedObjective`); ``None``
            otherwise.
    """

    name: str
    cost: LayerCost
    energies: np.ndarray
    weight: float = 1.0
    damage: np.ndarray | None = None
    values: np.ndarray | None = None


class BudgetMetric:
    """What a budget counts. Subclasses set :attr:`name` and implement :meth:`dense` and
    :meth:`lowrank`; the rest has defaults.
    """

    name: ClassVar[str]

    def dense(self, cost: LayerCost) -> float:
        """Cost of the dense layer."""
        raise NotImplementedError

    def lowrank(self, cost: LayerCost, ranks: np.ndarray) -> np.ndarray:
        """Cost of the two factor layers at each of ``ranks`` (1-based), float64."""
        raise NotImplementedError

    def curve(self, cost: LayerCost) -> np.ndarray:
        """``c(r) = min(lowrank(r), dense)`` for r = 1..R, ``(R,)`` float64: what the allocator
        sees (a layer is never charged more than its dense form)."""
        ranks = np.arange(1, cost.geometry.max_rank + 1, dtype=np.float64)
        return np.minimum(self.lowrank(cost, ranks), self.dense(cost))

    def prepare(
        self, candidates: Sequence[LayerCandidate], context: Any, rank_multiple: int
    ) -> list[LayerCandidate]:
        """The candidates with whatever this metric measures attached (default: unchanged).

        Args:
            context: the :class:`balf.CompressionContext` of the compression that asks: the
                model, the chosen layers (``targets``/``aliases``), the calibration data
                (``calibration_batches()``, ``run(model, batch)``), ``example_call()``,
                ``decompositions(activation_aware)`` and ``latency_table(rank_multiple)``.
            rank_multiple: the config's ``rank_multiple`` (ranks that can be chosen).
        """
        return list(candidates)

    def layer_keep_ratio(self, costs: Sequence[LayerCost], ratio: float) -> float:
        """The keep-ratio of the chosen layers' summed curves that a requested ``ratio`` means
        (default: the same; latency: of the whole model, fixed costs included)."""
        return ratio

    def unreachable(
        self, costs: Sequence[LayerCost], ratio: float, reachable: float
    ) -> str | None:
        """A message for a ``ratio`` below what can be reached, given ``reachable``, the summed
        cost of the cheapest allowed rank of every layer (``None``: the allocator's message)."""
        return None


class ParamsMetric(BudgetMetric):
    """Weight entries (bias excluded: it is kept as is)."""

    name = "params"

    def dense(self, cost: LayerCost) -> float:
        return float(cost.geometry.dense_params)

    def lowrank(self, cost: LayerCost, ranks: np.ndarray) -> np.ndarray:
        geo = cost.geometry
        return geo.groups * np.asarray(ranks, dtype=np.float64) * (geo.in_dim + geo.out_dim)


class FlopsMetric(ParamsMetric):
    """MACs per input sample: weight entries times the rows a sample gives the layer."""

    name = "flops"

    def _rows(self, cost: LayerCost) -> float:
        if cost.rows_per_sample is None:
            raise BALFError("FLOP costs need calibration statistics (output sizes are unknown)")
        return float(cost.rows_per_sample)

    def dense(self, cost: LayerCost) -> float:
        return super().dense(cost) * self._rows(cost)

    def lowrank(self, cost: LayerCost, ranks: np.ndarray) -> np.ndarray:
        return super().lowrank(cost, ranks) * self._rows(cost)


_METRICS: dict[str, BudgetMetric] = {}


def register_metric(metric: BudgetMetric) -> BudgetMetric:
    """Make ``metric`` usable as ``BALFConfig(ratio, metric=metric.name)``."""
    if not isinstance(metric, BudgetMetric):
        raise TypeError(f"expected a BudgetMetric instance, got {metric!r}")
    _METRICS[metric.name] = metric
    return metric


def registered_metrics() -> dict[str, BudgetMetric]:
    """Every registered metric by name, in registration order."""
    return dict(_METRICS)


def metric_named(metric: str | BudgetMetric) -> BudgetMetric:
    """The registered metric called ``metric`` (a metric object is returned as is).

    Raises:
        BALFError: no metric has that name.
    """
    if isinstance(metric, BudgetMetric):
        return metric
    found = _METRICS.get(metric) if isinstance(metric, str) else None
    if found is None:
        raise BALFError(f"metric must be one of {tuple(_METRICS)}, got {metric!r}")
    return found


register_metric(FlopsMetric())
register_metric(ParamsMetric())
