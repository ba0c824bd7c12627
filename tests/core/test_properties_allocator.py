"""The allocator at budgets it can meet exactly, and its multiplier after exactly n bisections.

``test_allocation.py`` checks feasibility, monotonicity and the relaxation's optimum at generic
budgets, where ``<`` and ``<=`` cannot be told apart, and counts iterations without checking that
they happened. Here costs are small integers whose total is a power of two, so ``ratio · total``
is exact and some selections cost *exactly* the budget; and the returned multiplier is compared
with the true threshold, computed independently from the breakpoints of the relaxation.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from balf.ranks.allocation import allocate

# per-layer integer costs (r = 1..R_l); their total at full rank is 16, a power of two
COSTS = [np.array([1.0, 2, 3, 4]), np.array([2.0, 4, 6, 8]), np.array([1.0, 2, 3, 4])]
TOTAL = 16.0


def _energies(seed: int) -> list[np.ndarray]:
    """Strictly increasing, strictly concave e_l(r) with e_l(R_l) = 1."""
    rng = np.random.default_rng(seed)
    out = []
    for c in COSTS:
        gains = np.sort(rng.uniform(0.05, 1.0, len(c)))[::-1]
        e = np.cumsum(gains) / gains.sum()
        e[-1] = 1.0
        out.append(e)
    return out


def _select(energies, costs, lam: float) -> list[int]:
    """The Lagrangian selection r(λ) of the method (smallest argmax), 0-based."""
    return [int(np.argmax(e - lam * c / TOTAL)) for e, c in zip(energies, costs, strict=True)]


def _cost(costs, idx) -> float:
    return float(sum(c[i] for c, i in zip(costs, idx, strict=True)))


def _energy(energies, idx) -> float:
    return float(sum(e[i] for e, i in zip(energies, idx, strict=True)))


def _breakpoints(energies, costs) -> list[float]:
    """Every λ > 0 at which some layer's selection can change."""
    lams = set()
    for e, c in zip(energies, costs, strict=True):
        for i, j in itertools.combinations(range(len(e)), 2):
            if c[j] != c[i] and e[j] > e[i]:
                lams.add(float((e[j] - e[i]) / ((c[j] - c[i]) / TOTAL)))
    return sorted(lams)


def _lagrangian_selections(energies, costs) -> list[list[int]]:
    """Every selection r(λ) for λ ≥ 0 (on each side of every breakpoint)."""
    lams = [0.0]
    for lam in _breakpoints(energies, costs):
        lams += [lam * (1 - 1e-9), lam * (1 + 1e-9)]
    return [_select(energies, costs, lam) for lam in lams]


def _threshold(energies, costs, budget: float) -> float:
    """The smallest λ whose selection is feasible (a breakpoint, or 0)."""
    if _cost(costs, _select(energies, costs, 0.0)) <= budget:
        return 0.0
    for lam in _breakpoints(energies, costs):
        if _cost(costs, _select(energies, costs, lam * (1 + 1e-12))) <= budget:
            return lam
    raise AssertionError("no feasible multiplier")


@pytest.mark.parametrize("seed", range(4), ids=lambda s: f"seed{s}")
def test_a_selection_costing_exactly_the_budget_is_returned(seed):
    energies = _energies(seed)
    attainable = {}
    for idx in _lagrangian_selections(energies, COSTS):
        attainable[_cost(COSTS, idx)] = idx
    assert len(attainable) >= 4  # the minimum, the full model and some in between
    for cost, idx in sorted(attainable.items()):
        ratio = cost / TOTAL  # exact: TOTAL is a power of two
        assert ratio * TOTAL == cost
        alloc = allocate(energies, COSTS, ratio)
        assert alloc.cost == cost, (cost, alloc.ranks)
        assert alloc.ranks == [i + 1 for i in idx]
        assert alloc.energy == pytest.approx(_energy(energies, idx), abs=1e-12)


def test_the_smallest_ratio_itself_is_accepted():
    """A budget equal to the cost of rank 1 everywhere is feasible (not a BudgetError)."""
    energies = _energies(0)
    smallest = sum(c[0] for c in COSTS)
    alloc = allocate(energies, COSTS, smallest / TOTAL)
    assert alloc.ranks == [1] * len(COSTS)
    assert alloc.cost == alloc.budget == smallest
    assert np.isfinite(alloc.lam)  # the doubling stopped at a feasible multiplier


def test_an_exact_budget_is_met_between_integers_too():
    """Budgets just below an attainable cost fall back to the next cheaper selection."""
    energies = _energies(1)
    costs_attained = sorted({_cost(COSTS, idx) for idx in _lagrangian_selections(energies, COSTS)})
    for below, cost in itertools.pairwise(costs_attained):
        alloc = allocate(energies, COSTS, (cost - 0.5) / TOTAL)
        assert alloc.cost == below


@pytest.mark.parametrize("seed", range(3), ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("position", [0.2, 0.55, 0.85], ids=lambda p: f"at{p}")
def test_multiplier_after_n_bisections_lies_in_the_bracket_halved_n_times(seed, position):
    """λ* ≤ λ_n ≤ λ* + λ_0 / 2ⁿ, where λ_0 is the multiplier after 0 steps (the bracket's top)."""
    rng = np.random.default_rng(seed)
    energies, costs = [], []
    for _ in range(6):  # generic (non-integer) costs: thresholds are not dyadic numbers
        r = int(rng.integers(2, 9))
        gains = np.sort(rng.exponential(size=r))[::-1]
        e = np.cumsum(gains) / gains.sum()
        e[-1] = 1.0
        energies.append(e)
        costs.append(float(rng.uniform(1, 10)) * np.arange(1, r + 1))
    total = sum(float(c[-1]) for c in costs)
    costs = [c * TOTAL / total for c in costs]  # same total as the helpers assume
    smallest = sum(float(c[0]) for c in costs) / TOTAL
    ratio = smallest + position * (1 - smallest)
    lam_star = _threshold(energies, costs, ratio * TOTAL)
    assert lam_star > 0
    top = allocate(energies, costs, ratio, n_iters=0).lam
    # doubling from 1 stops at the first feasible multiplier: the bracket is at most twice λ*
    assert lam_star <= top < 2 * max(lam_star, 1.0)
    for n in range(0, 31):
        alloc = allocate(energies, costs, ratio, n_iters=n)
        assert alloc.iterations == n
        assert alloc.lam >= lam_star * (1 - 1e-12), n
        assert alloc.lam - lam_star <= top / 2**n + 1e-12 * lam_star, (n, alloc.lam, lam_star)
