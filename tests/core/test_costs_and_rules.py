"""Cost model equals measured FLOPs/params; the baselines' rank rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import balf
from balf.layers.dispatch import geometry_of
from balf.layers.geometry import LayerGeometry
from balf.ranks.costs import LayerCost
from balf.ranks.rules import energy_threshold_rank, rank_ratio_rank, uniform_rank

LAYERS = [
    ("linear", lambda: nn.Linear(24, 10), (5, 24)),
    ("linear-tokens", lambda: nn.Linear(16, 40), (2, 7, 16)),
    ("conv", lambda: nn.Conv2d(8, 12, 3, padding=1), (2, 8, 9, 9)),
    ("conv-strided-grouped", lambda: nn.Conv2d(8, 12, 3, stride=2, groups=4), (2, 8, 11, 10)),
    (
        "conv-dilated",
        lambda: nn.Conv2d(6, 16, (3, 5), dilation=(2, 1), padding=(2, 2)),
        (3, 6, 8, 8),
    ),
    ("conv1d", lambda: nn.Conv1d(8, 12, 3, padding=1), (2, 8, 9)),
    ("conv1d-strided-grouped", lambda: nn.Conv1d(8, 12, 3, stride=2, groups=4), (2, 8, 11)),
]


def _weight_params(module: nn.Module) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if not n.endswith("bias"))


@pytest.mark.parametrize(("case", "make", "shape"), LAYERS, ids=[c[0] for c in LAYERS])
def test_cost_model_equals_measured_counts(case, make, shape):
    layer = make()
    x = torch.randn(shape)
    stats = balf.collect_statistics(layer, x, progress=False)
    cost = LayerCost(geometry_of(layer), stats.rows_per_sample(""))
    batch = shape[0]
    dense_flops = balf.count_flops(layer, x)
    assert dense_flops == 2 * cost.dense("flops") * batch
    assert _weight_params(layer) == cost.dense("params")
    for rank in (1, 2, geometry_of(layer).max_rank):
        compressor = balf.Compressor(layer, stats, progress=False)
        dec = compressor.decompositions(True)[""]
        from balf import factorize_layer

        small = factorize_layer(layer, dec, rank)
        assert balf.count_flops(small, x) == 2 * cost.lowrank(rank, "flops") * batch
        assert _weight_params(small) == cost.lowrank(rank, "params")


def test_cost_curve_is_capped_at_dense_and_non_decreasing():
    cost = LayerCost(LayerGeometry("conv2d", 2, 18, 6), rows_per_sample=49.0)
    curve = cost.curve("flops")
    assert curve.shape == (6,)
    assert np.all(np.diff(curve) >= 0)
    assert curve[-1] == cost.dense("flops")
    assert cost.curve("params")[0] == 2 * 1 * (18 + 6)


def test_flops_cost_without_statistics_is_an_error():
    with pytest.raises(balf.BALFError, match="statistics"):
        LayerCost(LayerGeometry("linear", 1, 4, 4)).curve("flops")


@pytest.mark.parametrize("threshold", [0.1, 0.5, 0.9, 0.95, 1.0])
def test_energy_rule_picks_the_smallest_rank_reaching_the_threshold(threshold):
    e = np.array([0.5, 0.8, 0.9, 0.95, 1.0])
    r = energy_threshold_rank(e, threshold)
    assert e[r - 1] >= threshold
    assert r == 1 or e[r - 2] < threshold


@pytest.mark.parametrize("ratio", [0.05, 0.3, 0.5, 0.8, 1.0])
@pytest.mark.parametrize(
    "geo",
    [
        LayerGeometry("linear", 1, 64, 10),
        LayerGeometry("conv2d", 1, 576, 64),
        LayerGeometry("conv2d", 32, 36, 4),
    ],
    ids=["linear", "conv", "grouped"],
)
def test_uniform_rule_is_the_smallest_rank_reaching_the_cost_fraction(ratio, geo):
    r = uniform_rank(geo, ratio)
    frac = lambda k: k * (geo.in_dim + geo.out_dim) / (geo.in_dim * geo.out_dim)  # noqa: E731
    brute = next((k for k in range(1, geo.max_rank + 1) if frac(k) >= ratio - 1e-12), geo.max_rank)
    assert r == brute
    if r < geo.max_rank:
        assert frac(r) >= ratio - 1e-12
    if r > 1:
        assert frac(r - 1) < ratio


@pytest.mark.parametrize(("ratio", "expected"), [(0.01, 1), (0.25, 3), (0.5, 5), (1.0, 10)])
def test_rank_ratio_rule(ratio, expected):
    assert rank_ratio_rank(LayerGeometry("linear", 1, 10, 20), ratio) == expected


def test_layers_are_replaced_only_where_cheaper():
    model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 100))
    x = torch.randn(50, 10)
    _, report = balf.compress(model, x, balf.UniformConfig(0.99), progress=False)
    for name, lr in report.layers.items():
        geo = geometry_of(dict(model.named_modules())[name])
        assert lr.factorized == geo.is_cheaper(uniform_rank(geo, 0.99))
    assert not report.layers["0"].factorized  # 10x10: any rank >= 5 costs as much as dense
