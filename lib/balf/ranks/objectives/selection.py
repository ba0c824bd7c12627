"""The per-budget selection among objectives (see :mod:`balf.ranks.objectives`)."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from balf.errors import BALFError, BudgetError
from balf.ranks.costs import LayerCandidate
from balf.ranks.objectives.base import Objective, objective_from_dict, objective_named
from balf.ranks.objectives.sensitivity import DIVERGENCES

__all__ = ["SelectedObjective"]


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
