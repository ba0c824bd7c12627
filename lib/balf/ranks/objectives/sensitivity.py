"""Objectives weighting each layer's energy by its measured sensitivity: the probes, their log
form and the first-order (Fisher) estimate (see :mod:`balf.ranks.objectives`)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from balf.errors import BALFError
from balf.ranks.costs import LayerCandidate
from balf.ranks.objectives.base import (
    _LOG_FLOOR,
    LogEnergyObjective,
    Objective,
    probe_rank,
)

__all__ = [
    "DIVERGENCES",
    "ESTIMATORS",
    "FisherSensitivityObjective",
    "LogSensitivityObjective",
    "SensitivityObjective",
]

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
