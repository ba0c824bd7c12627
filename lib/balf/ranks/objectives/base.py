"""The allocation objective's interface, the registry of objectives by name, and the paper's
objective with its log form (see :mod:`balf.ranks.objectives`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from balf.errors import BALFError
from balf.ranks.costs import LayerCandidate
from balf.ranks.rules import uniform_rank

__all__ = [
    "EnergyObjective",
    "LogEnergyObjective",
    "Objective",
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
