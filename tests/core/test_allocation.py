"""The budgeted allocator: feasible, monotone, optimal for the relaxation, n_iters respected."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _allocation_problems import random_problem

from balf.errors import BALFError, BudgetError
from balf.ranks.allocation import allocate


def _select(energies, costs, lam, total):
    return [int(np.argmax(e - lam * c / total)) for e, c in zip(energies, costs, strict=True)]


def _relaxation_optimum(energies, costs, budget):
    """Max energy over all Lagrangian selections r(λ), λ at every breakpoint and between."""
    total = sum(c[-1] for c in costs)
    lams = {0.0}
    for e, c in zip(energies, costs, strict=True):
        for i, j in itertools.combinations(range(len(e)), 2):
            if c[j] != c[i]:
                lam = (e[j] - e[i]) / (c[j] - c[i]) * total
                if lam > 0:
                    lams.update({lam, lam * (1 + 1e-9), lam * (1 - 1e-9)})
    best = None
    for lam in sorted(lams):
        idx = _select(energies, costs, lam, total)
        cost = sum(c[i] for c, i in zip(costs, idx, strict=True))
        energy = sum(e[i] for e, i in zip(energies, idx, strict=True))
        if cost <= budget and (best is None or energy > best):
            best = energy
    return best


@pytest.mark.parametrize("seed", range(12), ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("position", [0.05, 0.3, 0.6, 0.9], ids=lambda p: f"at{p}")
def test_matches_brute_force_optimum_of_the_relaxation(seed, position):
    """``position`` places the ratio between the smallest feasible one and 1."""
    energies, costs = random_problem(seed)
    total = sum(c[-1] for c in costs)
    smallest = sum(c[0] for c in costs) / total
    ratio = smallest + position * (1 - smallest)
    alloc = allocate(energies, costs, ratio)
    assert alloc.cost <= alloc.budget
    assert alloc.energy == pytest.approx(
        _relaxation_optimum(energies, costs, ratio * total), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(5), ids=lambda s: f"seed{s}")
def test_feasible_and_monotone_in_the_ratio(seed):
    energies, costs = random_problem(seed, n_layers=20, max_rank=64)
    total = sum(c[-1] for c in costs)
    smallest = sum(c[0] for c in costs) / total
    achieved = []
    for ratio in np.linspace(smallest + 1e-6, 1.0, 40):
        alloc = allocate(energies, costs, float(ratio))
        assert alloc.cost <= ratio * total * (1 + 1e-12)
        achieved.append(alloc.cost)
    assert all(b >= a for a, b in zip(achieved, achieved[1:], strict=False))


def test_full_ratio_keeps_every_rank():
    energies, costs = random_problem(1)
    alloc = allocate(energies, costs, 1.0)
    assert alloc.ranks == [len(c) for c in costs]


@pytest.mark.parametrize("n_iters", [0, 1, 5, 300])
def test_n_iters_is_respected_and_result_stays_feasible(n_iters):
    energies, costs = random_problem(3, n_layers=10, max_rank=32)
    alloc = allocate(energies, costs, 0.5, n_iters=n_iters)
    assert alloc.iterations == n_iters
    assert alloc.cost <= alloc.budget


@pytest.mark.parametrize("seed", range(4), ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.8])
def test_more_iterations_never_move_away_from_the_budget(seed, ratio):
    """The budget gap is non-increasing at every added bisection step, not only end to end."""
    energies, costs = random_problem(seed, n_layers=10, max_rank=32)
    smallest = sum(c[0] for c in costs) / sum(c[-1] for c in costs)
    ratio = max(ratio, smallest * 1.01)
    gaps = []
    for n in range(0, 41):
        alloc = allocate(energies, costs, ratio, n_iters=n)
        assert alloc.cost <= alloc.budget
        gaps.append(alloc.budget - alloc.cost)
    assert all(b <= a for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[-1] < gaps[0] or gaps[0] == 0


def test_budget_below_minimum_names_the_smallest_ratio():
    energies, costs = random_problem(2)
    smallest = sum(c[0] for c in costs) / sum(c[-1] for c in costs)
    with pytest.raises(BudgetError, match=f"{smallest:.4g}"):
        allocate(energies, costs, smallest * 0.5)


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5, float("nan")])
def test_ratio_outside_unit_interval_is_rejected(ratio):
    energies, costs = random_problem(0)
    with pytest.raises(BALFError, match="ratio"):
        allocate(energies, costs, ratio)
