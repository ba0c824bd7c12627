"""Allocation objectives: what the budgeted allocator maximises, one object per objective.

The allocator (:func:`balf.ranks.allocation.allocate`) maximises ``Σ_l v_l(r_l)`` under a budget;
an :class:`Objective` says what ``v_l(r)`` is, given the layer's kept-energy curve ``e_l(r)``
(``(R,)``, :attr:`balf.ranks.costs.LayerCandidate.energies`):

======================================  ======================  ==================================
objective                               ``v_l(r)``              measured first
======================================  ======================  ==================================
:class:`EnergyObjective`                ``e_l(r)``              nothing (the paper's, the default)
:class:`LogEnergyObjective`             ``log e_l(r)``          nothing (maximises ``Π_l e_l``)
:class:`SensitivityObjective`           ``w_l · e_l(r)``        ``w_l``: how much the model's output
                                                                moves per unit of lost energy of
                                                                layer ``l`` (one probe per layer)
:class:`LogSensitivityObjective`        ``w_l · log e_l(r)``    the same probes
:class:`FisherSensitivityObjective`     ``w_l · e_l(r)``        ``w_l`` estimated to second order
                                                                (one backward pass for all layers)
:class:`DamageObjective`                ``−D̂_l(1 − e_l(r))``    ``D_l`` at several truncations,
                                                                to second order (one pass)
:class:`SelectedObjective`              the best of several     each choice's allocation scored
                                                                on calibration samples
======================================  ======================  ==================================

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

from balf.errors import BALFError, BudgetError
from balf.ranks.costs import LayerCandidate
from balf.ranks.rules import uniform_rank

__all__ = [
    "DIVERGENCES",
    "ESTIMATORS",
    "DamageObjective",
    "EnergyObjective",
    "FisherSensitivityObjective",
    "LogEnergyObjective",
    "LogSensitivityObjective",
    "Objective",
    "SelectedObjective",
    "SensitivityObjective",
    "objective_from_dict",
    "objective_named",
    "damage_curve",
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

    def prepare_for(
        self, config: Any, candidates: Sequence[LayerCandidate], context: Any
    ) -> list[LayerCandidate]:
        """:meth:`prepare` for one config (what :meth:`balf.BALFConfig.prepare` calls): an
        objective that depends on the budget (:class:`SelectedObjective`) overrides this.

        Args:
            config: the :class:`balf.BALFConfig` being prepared.
        """
        return self.prepare(candidates, context)

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

#: How ``D_l`` is obtained (:mod:`balf.pipeline`): ``"probe"`` — measured, one forward pass over
#: the probe samples per layer (:mod:`balf.pipeline.sensitivity`); ``"fisher"`` — estimated to
#: second order for every layer at once from one forward and one backward pass
#: (:mod:`balf.pipeline.sensitivity_fisher`).
ESTIMATORS = ("probe", "fisher")


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
        estimator: one of :data:`ESTIMATORS` (measured probes by default).
        weights: measured weights by layer name (filled by :meth:`prepare`; given, they are
            used as they are and nothing is measured).
    """

    name: ClassVar[str] = "sensitivity"
    probe_keep: float = 0.5
    probe_samples: int | None = 128
    divergence: str = "auto"
    estimator: str = "probe"
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
        if self.estimator not in ESTIMATORS:
            raise BALFError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.weights is not None:
            weights = {str(k): float(v) for k, v in dict(self.weights).items()}
            bad = {k: v for k, v in weights.items() if not (math.isfinite(v) and v >= 0)}
            if bad:
                raise BALFError(f"sensitivity weights must be finite and >= 0, got {bad}")
            object.__setattr__(self, "weights", weights)

    def __hash__(self) -> int:  # weights is a dict
        items = tuple(sorted(self.weights.items())) if self.weights is not None else None
        return hash((self.probe_keep, self.probe_samples, self.divergence, self.estimator, items))

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


@dataclass(frozen=True)
class FisherSensitivityObjective(SensitivityObjective):
    """:class:`SensitivityObjective` with ``D_l`` estimated to second order from one forward and
    one backward pass for all layers (``estimator="fisher"``): the cost of a few forward passes
    over the probe samples instead of one per layer (:mod:`balf.pipeline.sensitivity_fisher`)."""

    name: ClassVar[str] = "fisher"
    estimator: str = "fisher"


def damage_curve(points: np.ndarray, lost: np.ndarray) -> np.ndarray:
    """The damage ``D̂(x)`` at lost energies ``lost``, from measured ``(x_k, D_k)`` points.

    Piecewise linear through ``(0, 0)`` and the points in order of ``x`` (made non-decreasing);
    past the deepest point it goes on with the larger of its last segment's slope and its mean
    slope ``D/x`` (a deeper cut never looks cheaper per unit of energy than the measured ones).

    Args:
        points: ``(P, 2)``, ``P ≥ 1``, ``x_k`` in ``(0, 1]``, ``D_k ≥ 0``.
        lost: ``(R,)`` lost energies ``1 − e(r)`` in ``[0, 1]``.

    Returns:
        ``(R,)`` float64, ``D̂ ≥ 0``, non-decreasing in ``lost``.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    pts = pts[np.argsort(pts[:, 0], kind="stable")]
    xs = np.concatenate([[0.0], pts[:, 0]])
    ys = np.maximum.accumulate(np.concatenate([[0.0], np.maximum(pts[:, 1], 0.0)]))
    lost = np.asarray(lost, dtype=np.float64)
    out = np.interp(lost, xs, ys)
    seg = (ys[-1] - ys[-2]) / max(xs[-1] - xs[-2], 1e-12)
    slope = max(seg, ys[-1] / max(xs[-1], 1e-12))
    beyond = lost > xs[-1]
    out[beyond] = ys[-1] + slope * (lost[beyond] - xs[-1])
    return out


@dataclass(frozen=True)
class DamageObjective(Objective):
    """Minus each layer's measured damage curve: ``v_l(r) = −D̂_l(1 − e_l(r))``.

    :class:`SensitivityObjective` assumes the damage of a truncation is proportional to the
    energy it loses, calibrated at one probe; when the allocator then cuts a layer far deeper
    than the probe, the real damage grows faster. Here each layer's divergence ``D_l`` is
    estimated at several truncations (``probe_keeps``, fractions of its parameters kept), all
    at once to second order from one forward and one backward pass
    (:func:`balf.pipeline.sensitivity_fisher.fisher_damage`), and the allocator minimises the
    summed damage read off the piecewise-linear curve through them (:func:`damage_curve`).
    Layers no probe truncation takes energy from get the median slope of the others.

    Args:
        probe_keeps: the probe truncations (fractions of the layer's parameters kept).
        probe_samples: calibration samples the estimate runs on (``None``: all of them).
        divergence: one of :data:`DIVERGENCES`.
    """

    name: ClassVar[str] = "damage"
    probe_keeps: tuple[float, ...] = (0.125, 0.25, 0.5, 0.75)
    probe_samples: int | None = 128
    divergence: str = "auto"

    def __post_init__(self) -> None:
        keeps = self.probe_keeps
        if isinstance(keeps, (int, float)) or not keeps:
            raise BALFError(f"probe_keeps must be a non-empty sequence, got {keeps!r}")
        for k in keeps:
            if isinstance(k, bool) or not isinstance(k, numbers.Real) or not 0 < float(k) < 1:
                raise BALFError(f"probe_keeps must be numbers in (0, 1), got {keeps!r}")
        object.__setattr__(self, "probe_keeps", tuple(sorted({float(k) for k in keeps})))
        n = self.probe_samples
        if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
            raise BALFError(f"probe_samples must be a positive integer or None, got {n!r}")
        if self.divergence not in DIVERGENCES:
            raise BALFError(f"divergence must be one of {DIVERGENCES}, got {self.divergence!r}")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["probe_keeps"] = list(self.probe_keeps)
        return out

    def prepare(self, candidates, context):
        damage = context.layer_damage(candidates, self)
        slopes = [pts[-1][1] / pts[-1][0] for pts in damage.values() if pts]
        fill = float(np.median(slopes)) if slopes else 1.0
        out = []
        for cand in candidates:
            pts = damage[cand.name] or [(1.0, fill)]
            out.append(dataclasses.replace(cand, damage=np.asarray(pts, dtype=np.float64)))
        return out

    def values(self, candidate: LayerCandidate) -> np.ndarray:
        if candidate.damage is None:
            raise BALFError(
                f"layer {candidate.name!r} has no measured damage: DamageObjective.prepare "
                "measures it (compress through balf.compress or a balf.Compressor)"
            )
        lost = 1.0 - np.asarray(candidate.energies, dtype=np.float64)
        return -damage_curve(candidate.damage, np.clip(lost, 0.0, 1.0))


@dataclass(frozen=True)
class SelectedObjective(Objective):
    """At each budget, the objective among ``choices`` whose allocation changes the model's
    output least.

    For every choice, the allocator runs at the config's budget; the model with the chosen
    layers truncated to those ranks (whole-model factors) runs on the first ``samples``
    calibration samples and is scored against the dense model's outputs: for a classifier's
    per-sample logits ``(B, C)`` first by the fraction of samples whose top class changes (what
    top-1 accuracy feels; a heavily cut model can have a lower KL with near-uniform outputs),
    ties broken by the KL; otherwise by the divergence (KL of per-token logits, relative error
    of other outputs, as the sensitivity probes). The lowest wins;
    ``report.objective["selection"]`` lists every choice's scores. Only calibration
    data is used (the same samples the probes see: an in-sample choice among a few candidates).
    Cost: what each choice measures (its probes are shared across budgets) plus one forward
    pass over ``samples`` per choice and budget.

    Args:
        choices: registered objective names or objectives (not another selection).
        samples: calibration samples the choice is scored on (``None``: all of them).
        divergence: one of :data:`DIVERGENCES`.
    """

    name: ClassVar[str] = "selected"
    choices: tuple[Any, ...] = ("energy", "log_energy", "fisher", "damage")
    samples: int | None = 128
    divergence: str = "auto"

    def __post_init__(self) -> None:
        choices = self.choices
        if isinstance(choices, (str, Objective)) or not choices:
            raise BALFError(f"choices must be a non-empty sequence of objectives, got {choices!r}")
        resolved = tuple(
            objective_from_dict(c) if isinstance(c, Mapping) else objective_named(c)
            for c in choices
        )
        if any(isinstance(c, SelectedObjective) for c in resolved):
            raise BALFError("a SelectedObjective cannot choose among selections")
        object.__setattr__(self, "choices", resolved)
        n = self.samples
        if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
            raise BALFError(f"samples must be a positive integer or None, got {n!r}")
        if self.divergence not in DIVERGENCES:
            raise BALFError(f"divergence must be one of {DIVERGENCES}, got {self.divergence!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.name,
            "choices": [c.to_dict() for c in self.choices],
            "samples": self.samples,
            "divergence": self.divergence,
        }

    def prepare(self, candidates, context):
        raise BALFError(
            "SelectedObjective chooses per budget: it is prepared by its config "
            "(BALFConfig(..., objective=SelectedObjective(...)))"
        )

    def prepare_for(self, config: Any, candidates: Sequence[LayerCandidate], context: Any):
        """The candidates as the best choice at ``config``'s budget prepares them, with its
        values ``(R,)`` set.

        Args:
            config: the :class:`balf.BALFConfig` being prepared (its budget).
            context: the compression's context; it scores ranks
                (``context.truncation_divergence``) and records the choice
                (``context.objective_selection``).

        Raises:
            BudgetError: no choice reaches the budget.
        """
        scored = []
        last_error: BudgetError | None = None
        for choice in self.choices:
            sub = dataclasses.replace(config, objective=choice)
            prepared = choice.prepare(candidates, context)
            try:
                ranks, _ = sub.select_ranks(prepared)
            except BudgetError as exc:
                last_error = exc
                continue
            score = context.truncation_divergence(prepared, ranks, self.samples, self.divergence)
            scored.append((score, choice, prepared))
        if not scored:
            raise last_error if last_error is not None else BudgetError("no choice reached it")
        _, best, prepared = min(scored, key=lambda t: t[0])
        context.objective_selection = {
            "chosen": best.name,
            "disagreement": {c.name: float(s[0]) for s, c, _ in scored},
            "divergence": {c.name: float(s[1]) for s, c, _ in scored},
        }
        return [dataclasses.replace(c, values=best.values(c)) for c in prepared]

    def values(self, candidate: LayerCandidate) -> np.ndarray:
        if candidate.values is None:
            raise BALFError(
                f"layer {candidate.name!r} has no values: SelectedObjective is prepared by its "
                "config (BALFConfig.prepare) before ranks are selected"
            )
        return np.asarray(candidate.values, dtype=np.float64)


_OBJECTIVES: dict[str, type[Objective]] = {}
#: Former names still read: ``{old: registered name}``.
_ALIASES = {"fisher_sensitivity": "fisher"}


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
    if isinstance(objective, str):
        objective = _ALIASES.get(objective, objective)
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
    name = _ALIASES.get(name, name) if isinstance(name, str) else name
    cls = _OBJECTIVES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise BALFError(f"unknown objective type {name!r}; expected one of {tuple(_OBJECTIVES)}")
    return cls(**data)


for _cls in (
    EnergyObjective,
    LogEnergyObjective,
    SensitivityObjective,
    LogSensitivityObjective,
    FisherSensitivityObjective,
    DamageObjective,
    SelectedObjective,
):
    register_objective(_cls)
