"""The budgeted rank allocator (method §5): Lagrangian relaxation of a multiple-choice knapsack.

Maximise ``Σ_l e_l(r_l)`` subject to ``Σ_l c_l(r_l) ≤ ρ · Σ_l c_l(R_l)``. For a multiplier λ each
layer independently takes the smallest ``argmax_r e_l(r) − λ·c_l(r)``; the total cost is
non-increasing in λ, so bisection finds the smallest feasible λ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from balf.errors import BALFError, BudgetError

__all__ = ["Allocation", "allocate", "cheapest_allowed", "smallest_reachable_cost"]

_MAX_DOUBLINGS = 2000


@dataclass(frozen=True)
class Allocation:
    """Result of :func:`allocate`.

    Attributes:
        ranks: chosen rank per layer (1-based).
        cost: total cost of the selection (same units as the input costs).
        budget: ``ratio ·`` total cost at full rank.
        total: total cost at full rank.
        energy: ``Σ_l e_l(r_l)``.
        lam: the multiplier of the returned selection (on costs normalised by ``total``).
        iterations: bisection steps performed.
    """

    ranks: list[int]
    cost: float
    budget: float
    total: float
    energy: float
    lam: float
    iterations: int


def _pad(curves: Sequence[np.ndarray], fill: float) -> np.ndarray:
    width = max(len(c) for c in curves)
    out = np.full((len(curves), width), fill, dtype=np.float64)
    for i, c in enumerate(curves):
        out[i, : len(c)] = c
    return out


def _check_inputs(
    energies: Sequence[np.ndarray], costs: Sequence[np.ndarray], ratio: float, n_iters: int
) -> None:
    """Raise :class:`BALFError` on an invalid ratio, ``n_iters`` or mismatched curves."""
    if not 0 < ratio <= 1:
        raise BALFError(f"ratio must be in (0, 1], got {ratio}")
    if n_iters < 0:
        raise BALFError(f"n_iters must be >= 0, got {n_iters}")
    if len(energies) != len(costs) or not energies:
        raise BALFError("energies and costs must be non-empty and of equal length")
    for e, c in zip(energies, costs, strict=True):
        if len(e) != len(c) or len(e) == 0:
            raise BALFError("each layer needs as many energies as costs (one per rank)")


def _smallest_feasible(feasible: Callable[[float], bool], n_iters: int) -> float | None:
    """A multiplier λ > 0 with ``feasible(λ)``, bisected ``n_iters`` times towards the smallest.

    ``feasible`` is monotone (false below some λ*, true above); the upper end starts at 1 and
    doubles until feasible (at most ``_MAX_DOUBLINGS`` times, never to infinity, where
    ``∞·0`` would be NaN), the lower end at 0. ``None``: no finite λ tried was feasible.
    """
    hi = 1.0
    for _ in range(_MAX_DOUBLINGS):
        if feasible(hi):
            break
        if not np.isfinite(hi * 2.0):
            return None
        hi *= 2.0
    else:
        return None
    lo = 0.0
    for _ in range(n_iters):
        mid = 0.5 * (lo + hi)
        if feasible(mid):
            hi = mid
        else:
            lo = mid
    return hi


def allocate(
    energies: Sequence[np.ndarray],
    costs: Sequence[np.ndarray],
    ratio: float,
    n_iters: int = 300,
) -> Allocation:
    """Choose one rank per layer maximising kept energy under a global cost budget.

    Args:
        energies: per layer, ``e_l(r)`` for r = 1..R_l, shape ``(R_l,)``.
        costs: per layer, ``c_l(r)`` for r = 1..R_l, shape ``(R_l,)``, non-decreasing.
        ratio: keep-ratio ρ in (0, 1].
        n_iters: bisection steps.

    Returns:
        A feasible :class:`Allocation` (cost ≤ budget).

    Raises:
        BALFError: invalid ratio, ``n_iters`` or mismatched inputs.
        BudgetError: the budget is below the cost of the cheapest selectable rank everywhere
            (names the smallest reachable ratio).

    A rank whose energy is ``-inf`` is never selected (e.g. one ``rank_multiple`` excludes).
    """
    _check_inputs(energies, costs, ratio, n_iters)
    cost_matrix = _pad(costs, 0.0)  # padded ranks have energy -inf: never selected
    energy_matrix = _pad(energies, -np.inf)
    full = np.array([len(c) for c in costs])
    total = float(sum(float(c[-1]) for c in costs))
    budget = ratio * total
    rows = np.arange(len(costs))

    def cost_of(idx: np.ndarray) -> float:
        return float(cost_matrix[rows, idx].sum())

    def result(idx: np.ndarray, lam: float, iterations: int) -> Allocation:
        return Allocation(
            ranks=[int(i) + 1 for i in idx],
            cost=cost_of(idx),
            budget=budget,
            total=total,
            energy=float(energy_matrix[rows, idx].sum()),
            lam=lam,
            iterations=iterations,
        )

    cheapest = cheapest_allowed(energy_matrix, cost_matrix)
    minimum = cost_of(cheapest)
    # a budget short of a reachable cost by rounding only (sums in another order; a keep-ratio
    # of 1 through the latency fixed part, (T − F)/S) is that cost
    for reachable in (minimum, total):
        if reachable * (1 - 1e-12) <= budget < reachable:
            budget = reachable
    if minimum > budget:
        raise BudgetError(
            f"a keep-ratio of {ratio:g} is below the smallest achievable cost: the cheapest "
            f"allowed rank in every layer keeps {minimum / total:.4g} of the cost; use a ratio "
            f">= {minimum / total:.4g}"
        )
    if total <= budget:
        return result(full - 1, 0.0, 0)

    normalised = cost_matrix / total

    def select(lam: float) -> np.ndarray:
        return np.argmax(energy_matrix - lam * normalised, axis=1)

    idx = select(0.0)
    if cost_of(idx) <= budget:
        return result(idx, 0.0, 0)
    hi = _smallest_feasible(lambda lam: cost_of(select(lam)) <= budget, n_iters)
    if hi is None:  # cost differences too small for any finite λ: the cheapest allowed ranks
        return result(cheapest, float("inf"), n_iters)
    return result(select(hi), hi, n_iters)


def cheapest_allowed(energy_matrix: np.ndarray, cost_matrix: np.ndarray) -> np.ndarray:
    """Per layer, the index of the cheapest selectable rank (the smallest such rank on ties).

    Args:
        energy_matrix: ``(L, R_max)`` energies, ``-inf`` where a rank cannot be selected
            (padding, or a rank ``rank_multiple`` excludes).
        cost_matrix: ``(L, R_max)`` costs.
    """
    allowed = np.isfinite(energy_matrix)
    if not allowed.any(axis=1).all():
        raise BALFError("every layer needs at least one selectable rank (finite energy)")
    return np.argmin(np.where(allowed, cost_matrix, np.inf), axis=1)


def smallest_reachable_cost(energies: Sequence[np.ndarray], costs: Sequence[np.ndarray]) -> float:
    """``Σ_l`` of the cheapest selectable rank's cost (``-inf`` energy: not selectable)."""
    return float(
        sum(
            float(np.min(np.asarray(c)[np.isfinite(e)]))
            for e, c in zip(energies, costs, strict=True)
        )
    )
