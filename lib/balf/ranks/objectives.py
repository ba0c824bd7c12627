"""Allocation objectives: what the budgeted allocator maximises, one object per objective.

The allocator (:func:`balf.ranks.allocation.allocate`) maximises ``Σ_l v_l(r_l)`` under a budget;
an :class:`Objective` says what ``v_l(r)`` is, given the layer's kept-energy curve ``e_l(r)``
(``(R,)``, :attr:`balf.ranks.costs.LayerCandidate.energies`):

==============================  ===============================  =================================
objective                       ``v_l(r)``                       measured first
==============================  ===============================  =================================
:class:`EnergyObjective`        ``e_l(r)``                       nothing (the paper's, the default)
:class:`LogEnergyObjective`     ``log e_l(r)``                   nothing (maximises ``Π_l e_l``)
:class:`SensitivityObjective`   ``w_l · e_l(r)``                 ``w_l``: how much the model's
                                                                 output moves per unit of lost
                                                                 energy of layer ``l``
==============================  ===============================  =================================

The paper's objective treats every layer alike: a unit of output energy lost in the classifier
costs the same as one lost in the first convolution. :class:`SensitivityObjective` measures, for
each layer alone, the change of the model's output when that layer is truncated
(:mod:`balf.pipeline.sensitivity`), divided by the energy the truncation loses, and weights the
layer's curve by it; the same allocator and budgets then apply.

A new objective is one subclass registered with :func:`register_objective`;
``BALFConfig(ratio, objective=...)`` takes its name or an instance and round-trips through
:meth:`balf.BALFConfig.to_dict` (:meth:`Objective.to_dict` / :func:`objective_from_dict`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from balf.errors import BALFError
from balf.ranks.costs import LayerCandidate
from balf.ranks.rules import uniform_rank

__all__ = [
    "DIVERGENCES",
    "EnergyObjective",
    "LogEnergyObjective",
    "LogSensitivityObjective",
    "Objective",
    "SensitivityObjective",
    "objective_from_dict",
    "objective_named",
    "probe_rank",
    "register_objective",
    "registered_objectives",
]


@dataclass(frozen=True)
class Objective:
    """Base class: per-layer values ``v_l(r)`` the allocator maximises the sum of.

    Subclasses are frozen dataclasses (their fields are the objective's settings, JSON values),
    set :attr:`name`, implement :meth:`values` and, where something must be measured on the
    model first, :meth:`prepare`.
    """

    name: ClassVar[str] = ""

    def prepare(self, candidates: Sequence[LayerCandidate], context: Any) -> list[LayerCandidate]:
        """The candidates with what this objective measures attached (default: unchanged).

        Args:
            context: the compression's context (:class:`balf.pipeline.context.CompressionContext`:
                the model, the chosen layers, the calibration batches, the decompositions).
        """
        return list(candidates)

    def values(self, candidate: LayerCandidate) -> np.ndarray:
        """``v(r)`` for r = 1..R, ``(R,)`` float64, non-decreasing in ``r``; ``-inf`` where a
        rank must never be selected (e.g. one that ``rank_multiple`` excludes)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """``{"type": name, **fields}``, JSON-serialisable."""
        return {"type": self.name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class EnergyObjective(Objective):
    """The paper's objective: the sum of kept-energy fractions, ``v_l(r) = e_l(r)``."""

    name: ClassVar[str] = "energy"

    def values(self, candidate: LayerCandidate) -> np.ndarray:
        return np.asarray(candidate.energies, dtype=np.float64)


#: Energy fractions below this count as this in :class:`LogEnergyObjective` (``log 0 = -inf``
#: would make a rank unselectable rather than merely bad).
_LOG_FLOOR = 1e-12


@dataclass(frozen=True)
class LogEnergyObjective(Objective):
    """``v_l(r) = log e_l(r)``: maximises the product of the kept-energy fractions (Zhang et
    al., TPAMI 2016), which penalises cutting one layer deeply more than the sum does."""

    name: ClassVar[str] = "log_energy"

    def values(self, candidate: LayerCandidate) -> np.ndarray:
        e = np.asarray(candidate.energies, dtype=np.float64)
        out = np.log(np.maximum(e, _LOG_FLOOR))
        return np.where(np.isneginf(e), -np.inf, out)


def probe_rank(candidate: LayerCandidate, keep: float) -> int:
    """The rank a sensitivity probe truncates ``candidate`` to: the one keeping ``keep`` of its
    parameters, at most its full rank minus one (a probe must cut something), at least 1."""
    geo = candidate.cost.geometry
    return max(1, min(uniform_rank(geo, keep), geo.max_rank - 1))


#: How the change of a model's output is measured (:mod:`balf.pipeline.sensitivity`):
#: ``"kl"`` — KL divergence of the softmax over the last dimension (classifiers' and language
#: models' logits), per output row; ``"relative_error"`` — ``‖Δ‖² / ‖y‖²`` of the output
#: (embeddings, regression); ``"auto"`` — ``"kl"`` when the model returns logits (a tensor of
#: two dimensions, or an output with a ``logits`` entry), ``"relative_error"`` otherwise.
DIVERGENCES = ("auto", "kl", "relative_error")


@dataclass(frozen=True)
class SensitivityObjective(Objective):
    """Energy weighted by each layer's measured sensitivity: ``v_l(r) = w_l · e_l(r)``.

    ``w_l = D_l / (1 − e_l(r_l⁰))``, where ``r_l⁰`` is the rank that keeps ``probe_keep`` of
    the layer's parameters (:func:`balf.ranks.rules.uniform_rank`), and ``D_l`` is the mean
    divergence between the dense model's outputs and those of the model with layer ``l``
    alone truncated to ``r_l⁰`` (the activation-aware factors), on the first ``probe_samples``
    calibration samples. Costs ``L`` forward passes over the probe samples for ``L`` layers
    (the time is reported as ``report.timings["sensitivity"]`` and the weights in
    ``report.objective``). Only calibration data is used: no tuning on evaluation data.

    Args:
        probe_keep: the fraction of a layer's parameters its probe truncation keeps.
        probe_samples: calibration samples the probes run on (``None``: all of them).
        divergence: one of :data:`DIVERGENCES`.
        weights: measured weights by layer name (filled by :meth:`prepare`; given, they are
            used as they are and nothing is measured).
    """

    name: ClassVar[str] = "sensitivity"
    probe_keep: float = 0.5
    probe_samples: int | None = 128
    divergence: str = "auto"
    weights: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        k = self.probe_keep
        if isinstance(k, bool) or not isinstance(k, numbers.Real) or not 0 < float(k) < 1:
            raise BALFError(f"probe_keep must be a number in (0, 1), got {k!r}")
        object.__setattr__(self, "probe_keep", float(k))
        n = self.probe_samples
        if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
            raise BALFError(f"probe_samples must be a positive integer or None, got {n!r}")
        if self.divergence not in DIVERGENCES:
            raise BALFError(f"divergence must be one of {DIVERGENCES}, got {self.divergence!r}")
        if self.weights is not None:
            weights = {str(k): float(v) for k, v in dict(self.weights).items()}
            bad = {k: v for k, v in weights.items() if not (math.isfinite(v) and v >= 0)}
            if bad:
                raise BALFError(f"sensitivity weights must be finite and >= 0, got {bad}")
            object.__setattr__(self, "weights", weights)

    def __hash__(self) -> int:  # weights is a dict
        items = tuple(sorted(self.weights.items())) if self.weights is not None else None
        return hash((self.probe_keep, self.probe_samples, self.divergence, items))

    def prepare(self, candidates, context):
        if self.weights is not None:
            missing = [c.name for c in candidates if c.name not in self.weights]
            if missing:
                raise BALFError(
                    f"the given sensitivity weights have no entry for {missing[:5]}; measure "
                    "them (weights=None) or give one per compressed layer"
                )
            weights = self.weights
        else:
            weights = context.layer_sensitivities(candidates, self)
        return [dataclasses.replace(c, weight=float(weights[c.name])) for c in candidates]

    def values(self, candidate: LayerCandidate) -> np.ndarray:
        return candidate.weight * np.asarray(candidate.energies, dtype=np.float64)

    def with_weights(self, weights: Mapping[str, float]) -> SensitivityObjective:
        """The same objective with ``weights`` given (e.g. to reuse measured weights)."""
        return dataclasses.replace(self, weights=dict(weights))


@dataclass(frozen=True)
class LogSensitivityObjective(SensitivityObjective):
    """Sensitivity-weighted log-energy: ``v_l(r) = w_l · log e_l(r)``.

    The damage model of :class:`SensitivityObjective`, ``w_l · (1 − e_l(r))``, is linear in the
    lost energy; a network's real damage grows faster than that when a layer is cut deeply.
    ``−log e = (1 − e) + (1 − e)²/2 + …`` agrees with it for small losses and grows without
    bound as ``e → 0``. The weight is calibrated on the same probe: ``w_l = D_l / (−log
    e_l(r_l⁰))`` (the probes, their settings and their cache are those of
    :class:`SensitivityObjective`; given ``weights`` are these log-form weights).
    """

    name: ClassVar[str] = "log_sensitivity"

    def prepare(self, candidates, context):
        if self.weights is not None:
            return super().prepare(candidates, context)
        out = []
        for cand in super().prepare(candidates, context):  # linear weights D / (1 − e⁰)
            e0 = float(cand.energies[probe_rank(cand, self.probe_keep) - 1])
            lost, log_lost = 1.0 - e0, -math.log(max(e0, _LOG_FLOOR))
            factor = lost / log_lost if lost > 1e-6 and log_lost > 0 else 1.0
            out.append(dataclasses.replace(cand, weight=cand.weight * factor))
        return out

    def values(self, candidate: LayerCandidate) -> np.ndarray:
        return candidate.weight * LogEnergyObjective().values(candidate)


_OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(cls: type[Objective]) -> type[Objective]:
    """Make an :class:`Objective` subclass usable by name (``BALFConfig(objective=name)``) and
    readable by :func:`objective_from_dict`. Usable as a class decorator."""
    if not (isinstance(cls, type) and issubclass(cls, Objective)) or not cls.name:
        raise TypeError(f"expected an Objective subclass with a name, got {cls!r}")
    _OBJECTIVES[cls.name] = cls
    return cls


def registered_objectives() -> dict[str, type[Objective]]:
    """Every registered objective class by name, in registration order."""
    return dict(_OBJECTIVES)


def objective_named(objective: str | Objective) -> Objective:
    """An objective instance: ``objective`` itself, or the registered one called so with its
    default settings.

    Raises:
        BALFError: no objective has that name, or ``objective`` is neither a name nor an
            :class:`Objective`.
    """
    if isinstance(objective, Objective):
        return objective
    cls = _OBJECTIVES.get(objective) if isinstance(objective, str) else None
    if cls is None:
        raise BALFError(
            f"objective must be an Objective or one of {tuple(_OBJECTIVES)}, got {objective!r}"
        )
    return cls()


def objective_from_dict(data: Mapping[str, Any] | str) -> Objective:
    """Inverse of :meth:`Objective.to_dict` (a bare name gives the default settings)."""
    if isinstance(data, str):
        return objective_named(data)
    data = dict(data)
    name = data.pop("type", None)
    cls = _OBJECTIVES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise BALFError(f"unknown objective type {name!r}; expected one of {tuple(_OBJECTIVES)}")
    return cls(**data)


for _cls in (EnergyObjective, LogEnergyObjective, SensitivityObjective, LogSensitivityObjective):
    register_objective(_cls)
