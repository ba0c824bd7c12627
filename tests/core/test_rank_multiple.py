"""``rank_multiple``: only allowed ranks, the budget met whenever an allowed
assignment meets it, otherwise a BudgetError naming the smallest reachable ratio (no NaN λ).

The old allocator checked feasibility with rank 1 (not a multiple), doubled λ to infinity when no
allowed rank fit and, with ``∞·0 = NaN``, returned rank 1 in some layers: ResNet-20 at
``BALFConfig(0.5, rank_multiple=16)`` kept 0.69 of the FLOPs and reported ``achieved`` ≈ 1% of
the budget.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import torch
from _allocation_problems import random_problem
from torch import nn

import balf
from balf.errors import BudgetError
from balf.ranks.allocation import allocate
from balf.ranks.configs import _only_multiples


def _problem(seed: int, n_layers: int = 4, max_rank: int = 20):
    return random_problem(seed, n_layers, max_rank, min_rank=2)


def _allowed(r: int, multiple: int) -> set[int]:
    return {k for k in range(multiple, r + 1, multiple)} | {r}


def _cheapest_ratio(energies, costs, multiple: int) -> float:
    total = sum(c[-1] for c in costs)
    return sum(min(c[k - 1] for k in _allowed(len(c), multiple)) for c in costs) / total


@pytest.mark.parametrize("multiple", [2, 4, 8, 16], ids=lambda m: f"m{m}")
@pytest.mark.parametrize("seed", range(6), ids=lambda s: f"seed{s}")
def test_only_allowed_ranks_and_the_budget_is_met_whenever_reachable(seed, multiple):
    energies, costs = _problem(seed)
    masked = [_only_multiples(e, multiple) for e in energies]
    smallest = _cheapest_ratio(energies, costs, multiple)
    for ratio in np.linspace(0.05, 1.0, 20):
        if ratio < smallest - 1e-12:
            with pytest.raises(BudgetError, match=re.escape(f"{smallest:.4g}")):
                allocate(masked, costs, float(ratio))
            continue
        alloc = allocate(masked, costs, float(ratio))
        for r, c in zip(alloc.ranks, costs, strict=True):
            assert r in _allowed(len(c), multiple)
        assert alloc.cost <= alloc.budget * (1 + 1e-12)
        assert math.isfinite(alloc.lam) and math.isfinite(alloc.energy)


def test_no_allowed_assignment_is_a_budget_error_naming_the_smallest_ratio():
    # three layers of full rank 20 with multiple 16: allowed ranks {16, 20}, cheapest 16/20
    energies = [np.linspace(0.05, 1.0, 20)] * 3
    costs = [np.arange(1, 21, dtype=float)] * 3
    masked = [_only_multiples(e, 16) for e in energies]
    with pytest.raises(BudgetError, match=r"use a ratio >= 0\.8\b"):
        allocate(masked, costs, 0.7)
    assert allocate(masked, costs, 0.8).ranks == [16, 16, 16]


def test_the_allocation_is_an_allowed_feasible_assignment_exactly_when_one_exists():
    """Brute force over every assignment of allowed ranks on a small problem."""
    energies, costs = _problem(3, n_layers=3, max_rank=9)
    masked = [_only_multiples(e, 3) for e in energies]
    total = sum(c[-1] for c in costs)
    choices = [sorted(_allowed(len(c), 3)) for c in costs]
    for ratio in (0.5, 0.7, 0.9):
        feasible = [
            sel
            for sel in itertools.product(*choices)
            if sum(c[r - 1] for c, r in zip(costs, sel, strict=True)) <= ratio * total
        ]
        if not feasible:
            with pytest.raises(BudgetError):
                allocate(masked, costs, ratio)
            continue
        alloc = allocate(masked, costs, ratio)
        assert tuple(alloc.ranks) in feasible


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 64, 3, padding=1)
        self.c = nn.Conv2d(64, 64, 3, padding=1)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.a(x))
        x = torch.relu(self.b(x))
        x = torch.relu(self.c(x))
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("metric", ["flops", "params"])
def test_compress_with_rank_multiple_keeps_the_budget_or_names_the_smallest_ratio(metric):
    model = _Net().eval()
    x = torch.randn(32, 3, 8, 8)
    compressor = balf.Compressor(model, x, progress=False)
    refused = []
    for ratio in (0.3, 0.5, 0.7, 0.9):
        config = balf.BALFConfig(ratio, metric=metric, rank_multiple=16)
        try:
            _, report = compressor.compress(config)
        except BudgetError as exc:
            found = re.search(r"use a ratio >= ([0-9.]+)", str(exc))
            assert found, str(exc)
            refused.append((ratio, float(found.group(1))))
            continue
        for layer in report.layers.values():
            if layer.factorized:
                assert layer.rank % 16 == 0 or layer.rank == layer.max_rank
        kept = report.layer_flops_ratio if metric == "flops" else report.layer_params_ratio
        assert kept <= ratio + 1e-9
        assert report.achieved <= report.budget and report.achieved > 0.5 * report.budget
        assert math.isfinite(report.allocator["lambda"])
    assert refused, "at least the lowest ratio is unreachable with multiples of 16"
    for ratio, smallest in refused:
        assert smallest > ratio
        _, report = compressor.compress(
            balf.BALFConfig(smallest + 1e-4, metric=metric, rank_multiple=16)
        )
