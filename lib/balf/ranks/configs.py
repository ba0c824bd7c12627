"""Compression configs: one validated dataclass per rank rule, round-tripping through JSON.

==========================  ====================================  ==========================
mode                        config                                rank rule
==========================  ====================================  ==========================
``flops_auto``              ``BALFConfig(ρ, metric="flops")``     budgeted allocator (§5)
``params_auto``             ``BALFConfig(ρ, metric="params")``    budgeted allocator (§5)
``latency_auto``            ``BALFConfig(ρ, metric="latency")``   allocator on measured latency
``energy``                  ``EnergyConfig(τ, False)``            weight-spectrum energy ≥ τ
``energy_act_aware``        ``EnergyConfig(τ)``                   activation energy ≥ τ
``uniform``                 ``UniformConfig(ρ, False)``           same cost fraction ρ
``uniform_act_aware``       ``UniformConfig(ρ)``                  same cost fraction ρ
``rank_ratio[_act_aware]``  ``RankRatioConfig(ρ[, False])``       r = ⌈ρ·R⌉
==========================  ====================================  ==========================

Each class declares its modes (name, fixed fields) with :func:`balf.ranks.modes.register_modes`;
``mode`` and ``knob`` are derived from them, and :func:`config_from_dict` finds the class.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from balf.errors import BALFError, BudgetError
from balf.ranks.allocation import Allocation, allocate, smallest_reachable_cost
from balf.ranks.costs import LayerCandidate, metric_named
from balf.ranks.modes import (
    MethodConfig,
    Mode,
    config_class_named,
    register_modes,
    registered_modes,
)
from balf.ranks.objectives import (
    EnergyObjective,
    Objective,
    objective_from_dict,
    objective_named,
)
from balf.ranks.rules import energy_threshold_rank, rank_ratio_rank, uniform_rank

__all__ = [
    "MODES",
    "BALFConfig",
    "CompressionConfig",
    "EnergyConfig",
    "RankRatioConfig",
    "UniformConfig",
    "config_from_dict",
    "config_for_mode",
]


def _check_unit_interval(config: Any, name: str) -> None:
    """Check that ``config.<name>`` is a real number in (0, 1] and store it as a ``float``.

    Any :class:`numbers.Real` is accepted (e.g. NumPy scalars), but not ``bool``.
    """
    value = getattr(config, name)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise BALFError(f"{name} must be a number in (0, 1], got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and 0 < value <= 1):
        raise BALFError(f"{name} must be in (0, 1], got {value}")
    object.__setattr__(config, name, value)  # frozen dataclass: a plain float for JSON


@dataclass(frozen=True)
class CompressionConfig(MethodConfig):
    """Base class: a rank rule. Subclasses define ``activation_aware`` and
    :meth:`select_ranks`, and register their modes."""

    def select_ranks(
        self, candidates: Sequence[LayerCandidate]
    ) -> tuple[list[int], Allocation | None]:
        """Ranks for ``candidates`` (1-based), and the allocator's result where one ran."""
        raise NotImplementedError

    def prepare(self, candidates: Sequence[LayerCandidate], context) -> list[LayerCandidate]:
        """The candidates with whatever the rule needs measured first (default: unchanged).

        Args:
            context: the :class:`balf.CompressionContext` of the compression (see
                :meth:`balf.ranks.costs.BudgetMetric.prepare`).
        """
        return list(candidates)


_PLAIN = {"activation_aware": False}
_AWARE = {"activation_aware": True}


@register_modes(
    Mode("flops_auto", {"metric": "flops"}),
    Mode("params_auto", {"metric": "params"}),
    Mode("latency_auto", {"metric": "latency"}),
    Mode("flops_auto_sensitivity", {"metric": "flops", "objective": "sensitivity"}),
    Mode("params_auto_sensitivity", {"metric": "params", "objective": "sensitivity"}),
    Mode("flops_auto_log_energy", {"metric": "flops", "objective": "log_energy"}),
    Mode("params_auto_log_energy", {"metric": "params", "objective": "log_energy"}),
    Mode("flops_auto_log_sensitivity", {"metric": "flops", "objective": "log_sensitivity"}),
    Mode("params_auto_log_sensitivity", {"metric": "params", "objective": "log_sensitivity"}),
    Mode("flops_auto_fisher", {"metric": "flops", "objective": "fisher"}),
    Mode("params_auto_fisher", {"metric": "params", "objective": "fisher"}),
    Mode("flops_auto_damage", {"metric": "flops", "objective": "damage"}),
    Mode("params_auto_damage", {"metric": "params", "objective": "damage"}),
    Mode("flops_auto_selected", {"metric": "flops", "objective": "selected"}),
    Mode("params_auto_selected", {"metric": "params", "objective": "selected"}),
)
@dataclass(frozen=True)
class BALFConfig(CompressionConfig):
    """BALF: activation-aware factors, ranks from the budgeted allocator.

    Args:
        ratio: keep-ratio ρ ∈ (0, 1] of the chosen layers' FLOPs or parameters, or (``metric=
            "latency"``) of the whole model's latency measured on the target device (see
            :mod:`balf.ranks.latency`; the :class:`balf.Compressor` measures or is given the table).
        metric: a registered :class:`balf.ranks.costs.BudgetMetric`'s name: ``"flops"``,
            ``"params"``, ``"latency"`` or one of :func:`balf.ranks.costs.register_metric`.
        n_iters: bisection iterations of the allocator.
        rank_multiple: ranks are multiples of this (or a layer's full rank), e.g. 8 for
            hardware-friendly matrix shapes.
        objective: what the allocator maximises (:mod:`balf.ranks.objectives`): an
            :class:`~balf.ranks.objectives.Objective`, a registered objective's name
            (``"energy"``, the paper's sum of kept-energy fractions and the default;
            ``"log_energy"``; ``"sensitivity"``; ``"log_sensitivity"``;
            ``"fisher"``; ``"damage"``; ``"selected"``), or its ``to_dict()``.
    """

    activation_aware: ClassVar[bool] = True
    ratio: float
    metric: str = "flops"
    n_iters: int = 300
    rank_multiple: int = 1
    objective: Objective | str = "energy"

    def __post_init__(self) -> None:
        _check_unit_interval(self, "ratio")
        metric_named(self.metric)  # BALFError naming the registered metrics
        n = self.n_iters
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or n < 0:
            raise BALFError(f"n_iters must be a non-negative integer, got {self.n_iters!r}")
        object.__setattr__(self, "n_iters", int(n))
        m = self.rank_multiple
        if isinstance(m, (bool, np.bool_)) or not isinstance(m, numbers.Integral) or m < 1:
            raise BALFError(f"rank_multiple must be a positive integer, got {m!r}")
        object.__setattr__(self, "rank_multiple", int(m))
        objective = self.objective
        if isinstance(objective, dict):
            objective = objective_from_dict(objective)
        object.__setattr__(self, "objective", objective_named(objective))

    @property
    def mode(self) -> str:
        """``flops_auto``/``params_auto``/``latency_auto`` (``<metric>_auto`` for a new metric)
        with the paper's objective, ``<metric>_auto_<objective>`` with another one."""
        if isinstance(self.objective, EnergyObjective):
            return f"{self.metric}_auto"
        return f"{self.metric}_auto_{self.objective.name}"

    def to_dict(self) -> dict[str, Any]:
        """``{"type": "BALFConfig", ...}``; ``"objective"`` only when it is not the paper's
        (so configs written before objectives existed read and compare as they did)."""
        out = super().to_dict()
        if isinstance(self.objective, EnergyObjective):
            del out["objective"]
        else:
            out["objective"] = self.objective.to_dict()
        return out

    def prepare(self, candidates, context):
        candidates = metric_named(self.metric).prepare(candidates, context, self.rank_multiple)
        return self.objective.prepare_for(self, candidates, context)

    def select_ranks(self, candidates):
        metric = metric_named(self.metric)
        costs = [c.cost for c in candidates]
        ratio = metric.layer_keep_ratio(costs, self.ratio)
        energies = [self.objective.values(c) for c in candidates]
        if self.rank_multiple > 1:
            energies = [_only_multiples(e, self.rank_multiple) for e in energies]
        curves = [metric.curve(cost) for cost in costs]
        try:
            allocation = allocate(energies, curves, ratio, self.n_iters)
        except BudgetError as exc:
            reachable = smallest_reachable_cost(energies, curves)
            message = metric.unreachable(costs, self.ratio, reachable)
            if message is None:
                raise
            raise BudgetError(message) from exc
        return allocation.ranks, allocation


def _only_multiples(energies: np.ndarray, multiple: int) -> np.ndarray:
    """``energies`` with ranks that are neither a multiple of ``multiple`` nor the full rank
    made unselectable (``-inf``)."""
    out = np.full(len(energies), -np.inf)
    keep = np.arange(multiple, len(energies) + 1, multiple) - 1
    out[keep] = energies[keep]
    out[-1] = energies[-1]
    return out


@register_modes(
    Mode("energy", _PLAIN),
    Mode("energy_act_aware", _AWARE),
)
@dataclass(frozen=True)
class EnergyConfig(CompressionConfig):
    """Per layer, the smallest rank keeping a fraction ``threshold`` of the spectrum's energy.

    ``activation_aware=True`` uses output energies (``energy_act_aware``), ``False`` the weight
    spectrum with plain-SVD factors (``energy``, data-free).
    """

    threshold: float
    activation_aware: bool = True

    def __post_init__(self) -> None:
        _check_unit_interval(self, "threshold")

    def select_ranks(self, candidates):
        return [energy_threshold_rank(c.energies, self.threshold) for c in candidates], None


@register_modes(
    Mode("uniform", _PLAIN),
    Mode("uniform_act_aware", _AWARE),
)
@dataclass(frozen=True)
class UniformConfig(CompressionConfig):
    """Every layer keeps the same fraction ``ratio`` of its parameters (and FLOPs)."""

    ratio: float
    activation_aware: bool = True

    def __post_init__(self) -> None:
        _check_unit_interval(self, "ratio")

    def select_ranks(self, candidates):
        return [uniform_rank(c.cost.geometry, self.ratio) for c in candidates], None


@register_modes(
    Mode("rank_ratio", _PLAIN),
    Mode("rank_ratio_act_aware", _AWARE),
)
@dataclass(frozen=True)
class RankRatioConfig(CompressionConfig):
    """Every layer keeps ``⌈ratio·R⌉`` of its ``R`` ranks (single-layer illustration)."""

    ratio: float
    activation_aware: bool = True

    def __post_init__(self) -> None:
        _check_unit_interval(self, "ratio")

    def select_ranks(self, candidates):
        return [rank_ratio_rank(c.cost.geometry, self.ratio) for c in candidates], None


_BUILT_IN = (BALFConfig, EnergyConfig, UniformConfig, RankRatioConfig)

MODES: dict[str, Mode] = {m.name: m for cls in _BUILT_IN for m in cls.modes}
"""The built-in compression modes by name (``mode.make(knob)`` is the config). Every registered
mode, with new rank rules and Model Folding's: :func:`balf.ranks.modes.registered_modes`."""


def config_for_mode(mode: str, knob: float, **kwargs: Any) -> CompressionConfig:
    """The config of a named compression mode at one knob value (any registered rank rule).

    Example:
        >>> config_for_mode("flops_auto", 0.5)
        BALFConfig(ratio=0.5, metric='flops', n_iters=300)
    """
    spec = registered_modes().get(mode)
    if spec is None or not issubclass(spec.config_class, CompressionConfig):
        known = sorted(
            n
            for n, m in registered_modes().items()
            if m.config_class is not None and issubclass(m.config_class, CompressionConfig)
        )
        raise BALFError(f"unknown mode {mode!r}; choose one of {known}")
    return spec.make(knob, **kwargs)


def config_from_dict(data: dict[str, Any]) -> CompressionConfig:
    """Inverse of :meth:`CompressionConfig.to_dict`, for every registered rank rule (a class
    decorated with :func:`balf.register_modes`, built in or not)."""
    data = dict(data)
    name = data.pop("type", None)
    cls = config_class_named(name) if isinstance(name, str) else None
    if cls is None or not issubclass(cls, CompressionConfig):
        known = sorted(
            {m.config_class.__name__ for m in registered_modes().values()
             if issubclass(m.config_class, CompressionConfig)}
        )
        raise BALFError(f"unknown config type {name!r}; expected one of {known}")
    return cls(**data)
