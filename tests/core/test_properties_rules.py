"""The baselines' rank rules and the replace-only-if-cheaper rule at exact ties.

``test_costs_and_rules.py`` checks the rules at generic values; a dropped rounding guard or a
``<`` for ``<=`` only shows where the knob hits a rank exactly (``(7/25) · 25`` is
``7.000000000000001`` in floating point, and ``⌈·⌉`` of it is 8).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import balf
from balf.layers.geometry import LayerGeometry
from balf.ranks.rules import energy_threshold_rank, rank_ratio_rank, uniform_rank

GEOMETRIES = [
    LayerGeometry("linear", 1, 10, 20),
    LayerGeometry("linear", 1, 30, 7),
    LayerGeometry("conv2d", 1, 27, 16),
    LayerGeometry("conv2d", 4, 36, 12),
]
GEO_IDS = ["linear-10x20", "linear-30x7", "conv-27x16", "grouped-36x12"]


def test_rank_ratio_rule_at_every_exact_fraction():
    for big_r in range(1, 65):
        geo = LayerGeometry("linear", 1, big_r, big_r + 3)
        for k in range(1, big_r + 1):
            assert rank_ratio_rank(geo, k / big_r) == k, (k, big_r)


@pytest.mark.parametrize("geo", GEOMETRIES, ids=GEO_IDS)
def test_uniform_rule_at_every_exact_cost_fraction(geo):
    d, k = geo.in_dim, geo.out_dim
    for r in range(1, geo.max_rank + 1):
        ratio = r * (d + k) / (d * k)
        if ratio > 1:
            break
        assert uniform_rank(geo, ratio) == r, r


def test_energy_rule_at_every_exact_energy():
    rng = np.random.default_rng(0)
    gains = np.sort(rng.exponential(size=12))[::-1]
    e = np.cumsum(gains) / gains.sum()
    e[-1] = 1.0
    for r in range(1, len(e) + 1):
        assert energy_threshold_rank(e, float(e[r - 1])) == r, r
        if r < len(e):
            assert energy_threshold_rank(e, float(np.nextafter(e[r - 1], 2.0))) == r + 1, r


def test_a_layer_whose_low_rank_form_costs_exactly_the_dense_one_stays_dense():
    """``Linear(10, 10)`` at rank 5 costs 5·(10+10) = 100 = 10·10: not strictly cheaper."""
    model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 40))
    x = torch.randn(30, 10)
    small, report = balf.compress(model, x, balf.RankRatioConfig(0.5), progress=False)
    assert report.layers["0"].rank == report.layers["0"].max_rank  # kept at full rank
    assert not report.layers["0"].factorized
    assert isinstance(small[0], nn.Linear)
    assert report.layers["2"].factorized  # 5·(10+40) = 250 < 400
    assert balf.count_params(small) < balf.count_params(model)
