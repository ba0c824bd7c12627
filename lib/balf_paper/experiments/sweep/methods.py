"""From a sweep's mode and knob to a compressed model: the method config, the calibration
strategy, and applying it.

Modes come from the method package's registry (:func:`balf.ranks.modes.registered_modes`) and
Model Folding's: the runner knows no mode by name. A mode's config is ``spec.make(knob,
**config.method_kwargs())``, so options of newly registered modes pass through
``SweepConfig.method_options``. Three small registries hold what the paper adds:

- calibration strategies by name (:func:`register_strategy`): ``"whole"`` (whole-model
  statistics), ``"block"`` (:class:`balf.BlockByBlock`, options passed through) and ``"refit"``
  (:class:`balf.LayerSequential` with :class:`balf.AnchoredRefit`: options ``beta``, ``samples``,
  ``ridge``) and ``"block-refit"`` (:class:`balf.BlockByBlock` with the anchored refit: options
  ``beta``, ``ridge`` and block by block's own);
- knob solvers by config class (:func:`register_knob_solver`): with
  ``knob_target="params_ratio"`` a mode whose knob is no ratio is solved for it; the energy
  modes' threshold is the largest whose ranks keep at most the ratio of the compressed
  layers' parameters (:func:`energy_threshold_for`). Ratio modes take the ratio as their knob;
- how a config class is applied (:func:`apply_method`, one function per class).

``SweepConfig.objective_options`` set fields of the mode's allocation objective where it has
them (``probe_samples`` of the sensitivity-weighted objective).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

import balf
from balf.errors import BALFError, BudgetError
from balf.pipeline.compressor import Compressor
from balf.ranks.configs import CompressionConfig, LayerCandidate
from balf.ranks.modes import MethodConfig, mode_spec
from balf_paper.experiments.sweep.config import SweepConfig
from balf_paper.folding import FoldingConfig, kept_channels

__all__ = [
    "apply_method",
    "energy_threshold_for",
    "has_objective_options",
    "method_for",
    "register_knob_solver",
    "register_strategy",
    "registered_strategies",
    "strategy_for",
    "uses_calibration",
    "with_objective_options",
]

#: name -> ``(options -> strategy object or None)``.
_STRATEGIES: dict[str, Callable[..., Any]] = {}
#: (config class, knob target) -> ``(mode spec, target, compressor, kwargs) -> config``.
_SOLVERS: dict[tuple[type, str], Callable[..., MethodConfig]] = {}


def register_strategy(name: str, factory: Callable[..., Any]) -> None:
    """Make ``name`` a calibration strategy: ``factory(**strategy_options)`` gives what
    :class:`balf.Compressor` takes as ``strategy=`` (``None``: whole-model)."""
    _STRATEGIES[name] = factory


def registered_strategies() -> list[str]:
    """The strategy names, in registration order."""
    return list(_STRATEGIES)


def strategy_for(config: SweepConfig) -> Any:
    """The strategy object of ``config`` (``None`` for whole-model calibration)."""
    if config.strategy not in _STRATEGIES:
        raise BALFError(
            f"unknown calibration strategy {config.strategy!r}; choose one of "
            f"{registered_strategies()}"
        )
    return _STRATEGIES[config.strategy](**config.strategy_options)


def _refit(
    beta: float = 1.0, samples: int | None = None, ridge: float | None = None
) -> balf.LayerSequential:
    refit = balf.AnchoredRefit(beta=beta) if ridge is None else balf.AnchoredRefit(beta, ridge)
    return balf.LayerSequential(refit, samples=samples)


def _block_refit(
    beta: float = 1.0, ridge: float | None = None, **options: Any
) -> balf.BlockByBlock:
    refit = balf.AnchoredRefit(beta=beta) if ridge is None else balf.AnchoredRefit(beta, ridge)
    return balf.BlockByBlock(refit=refit, **options)


register_strategy("whole", lambda **options: None)
register_strategy("block", lambda **options: balf.BlockByBlock(**options))
register_strategy("refit", _refit)
register_strategy("block-refit", _block_refit)


def register_knob_solver(
    config_class: type, target: str, solver: Callable[..., MethodConfig]
) -> None:
    """Solve the knob of ``config_class``'s modes for a knob meaning ``target``:
    ``solver(spec, value, compressor, kwargs) -> config``."""
    _SOLVERS[(config_class, target)] = solver


def uses_calibration(mode: str) -> bool:
    """Whether ``mode`` reads calibration data (activation-aware, or a data-reading repair)."""
    method = mode_spec(mode).make(0.5)
    if isinstance(method, FoldingConfig):
        return method.repair == "r"
    return bool(getattr(method, "activation_aware", True))


def method_for(config: SweepConfig, knob: float, compressor: Compressor | None) -> MethodConfig:
    """The method config of ``config``'s mode at ``knob`` (solved when ``knob_target`` asks).

    Raises:
        BudgetError: no knob of the mode meets the target.
    """
    spec = mode_spec(config.mode)
    kwargs = config.method_kwargs()
    solver = _SOLVERS.get((spec.config_class, config.knob_target))
    if config.knob_target is None or solver is None:
        method = spec.make(knob, **kwargs)
    else:
        method = solver(spec, knob, compressor, kwargs)
    return with_objective_options(method, config.objective_options)


def _has_fields(objective: Any, options: dict[str, Any]) -> bool:
    return set(options) <= {f.name for f in dataclasses.fields(objective)}


def _with_options(objective: Any, options: dict[str, Any]) -> Any:
    """``objective`` with ``options`` set where it has them; a selection's choices each get
    those they have (``--probe-samples`` reaches the objectives a selection measures)."""
    if isinstance(objective, balf.SelectedObjective):
        choices = tuple(_with_options(c, options) for c in objective.choices)
        return dataclasses.replace(objective, choices=choices)
    if not _has_fields(objective, options):
        return objective
    return dataclasses.replace(objective, **options)


def has_objective_options(mode: str, options: dict[str, Any]) -> bool:
    """Whether ``mode``'s allocation objective (or one a selection chooses among) has every
    field of ``options``."""
    objective = getattr(mode_spec(mode).make(0.5), "objective", None)
    if not options or objective is None:
        return False
    if isinstance(objective, balf.SelectedObjective):
        return any(_has_fields(c, options) for c in objective.choices)
    return _has_fields(objective, options)


def with_objective_options(method: MethodConfig, options: dict[str, Any]) -> MethodConfig:
    """``method`` with its objective's fields set from ``options`` (unchanged when its objective
    lacks one of them; a selection's choices each get those they have)."""
    objective = getattr(method, "objective", None)
    if not options or objective is None:
        return method
    updated = _with_options(objective, options)
    return method if updated is objective else dataclasses.replace(method, objective=updated)


def _params_ratio(candidates: list[LayerCandidate], ranks: list[int]) -> float:
    before = sum(c.cost.dense("params") for c in candidates)
    after = sum(c.cost.realised(r, "params") for c, r in zip(candidates, ranks, strict=True))
    return after / before


def energy_threshold_for(candidates: list[LayerCandidate], ratio: float, steps: int = 60) -> float:
    """The largest energy threshold τ whose ranks keep at most ``ratio`` of the parameters.

    Raises:
        BudgetError: even rank 1 everywhere keeps more than ``ratio``.
    """

    def kept(tau: float) -> float:
        return _params_ratio(candidates, balf.EnergyConfig(tau).select_ranks(candidates)[0])

    lo, hi = 1e-12, 1.0
    if kept(lo) > ratio:
        raise BudgetError(f"no energy threshold keeps at most {ratio:g} of the parameters")
    if kept(hi) <= ratio:
        return hi
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if kept(mid) <= ratio else (lo, mid)
    return lo


def _energy_at_ratio(spec, ratio: float, compressor: Compressor, kwargs: dict) -> MethodConfig:
    activation_aware = bool(spec.fixed.get("activation_aware", True))
    tau = energy_threshold_for(compressor.candidates(activation_aware), ratio)
    return spec.make(tau, **kwargs)


register_knob_solver(balf.EnergyConfig, "params_ratio", _energy_at_ratio)


@functools.singledispatch
def apply_method(
    method: MethodConfig, model: nn.Module, compressor: Compressor | None,
    calibration: Iterable | None, seed: int,
) -> tuple[nn.Module, dict[str, Any], Any]:  # fmt: skip
    """``(compressed model, the method's point fields, report or None)`` of ``method``."""
    raise BALFError(f"the sweep runner cannot run a {type(method).__name__}")


@apply_method.register
def _(method: CompressionConfig, model, compressor, calibration, seed):
    small, report = compressor.compress(method)
    fields = {
        "layer_flops_ratio": report.layer_flops_ratio,
        "layer_params_ratio": report.layer_params_ratio,
        "budget": report.budget,
        "achieved": report.achieved,
        "factorized_layers": sum(lr.factorized for lr in report.layers.values()),
        "method": method.to_dict(),
        "ranks": report.ranks,
        "timings": report.timings,
    }
    if getattr(report, "objective", None):
        fields["objective"] = report.objective
    return small, fields, report


@apply_method.register
def _(method: FoldingConfig, model, compressor, calibration, seed):
    """Model Folding of ``model`` (only repair ``"r"`` reads ``calibration``)."""
    start = time.perf_counter()
    small = method.apply(model, calibration, seed=seed)
    fields = {
        "repair": method.repair,
        "kept_channels": kept_channels(model, method.keep),
        "method": method.to_dict(),
        "ranks": {},
        "timings": {"fold": time.perf_counter() - start},
    }
    return small, fields, None
