"""Latency budgets (``BALFConfig(ρ, metric="latency")``) on injected latency tables.

No assertion depends on timing: the allocator is checked on fake, deterministic tables.
- The allocator meets "keep ρ of the model's latency" in the measured cost model, counting the
  fixed part outside the chosen layers, at every ratio.
- ``rank_multiple`` is respected, for latency and FLOPs budgets alike.
- A layer whose factorized form is never faster than its dense form stays dense.
- An unreachable latency budget is a :class:`balf.BudgetError` naming the smallest ratio.
- :func:`balf.ranks.latency.measure_latency` runs on a tiny model, fills the table for every layer,
  and reuses its disk cache.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import balf
from balf import latency as lat
from balf.ranks.latency import LatencyTable, LayerLatency

NAMES = ("0", "2", "4")


def _model() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 48)
    ).eval()


def _linear_table(slow: str | None = None, fixed: float = 0.5) -> LatencyTable:
    """Dense latency ∝ D·K, factorized ∝ 0.2 + r·(D+K); ``slow`` is never faster than dense."""
    dims = {"0": (32, 64), "2": (64, 64), "4": (64, 48)}
    layers = {}
    for name, (d, k) in dims.items():
        dense = d * k / 1000
        ranks = list(range(1, min(d, k) + 1))
        if name == slow:
            lowrank = [dense * 1.5 + 0.01 * r for r in ranks]
        else:
            lowrank = [0.2 + r * (d + k) / 1000 for r in ranks]
        layers[name] = LayerLatency(dense, ranks, lowrank)
    total = sum(v.dense for v in layers.values()) + fixed
    return LatencyTable(layers, total, {"device": "fake"})


@pytest.fixture(scope="module")
def calib() -> torch.Tensor:
    return torch.randn(256, 32, generator=torch.Generator().manual_seed(0))


def _predicted_ratio(table: LatencyTable, report: balf.Report) -> float:
    """(Σ realised layer latency + fixed) / model latency, from the table."""
    seconds = table.fixed
    for name, layer in report.layers.items():
        t = table.layers[name]
        seconds += float(t.lowrank_at(layer.rank)) if layer.factorized else t.dense
    return seconds / table.model


@pytest.mark.parametrize("ratio", [0.55, 0.7, 0.85, 1.0], ids=lambda r: f"keep{r}")
def test_allocator_meets_the_latency_budget(calib, ratio):
    table = _linear_table()
    compressor = balf.Compressor(_model(), calib, latency=table, progress=False)
    _, report = compressor.compress(balf.BALFConfig(ratio, metric="latency"))
    assert report.metric == "latency"
    assert _predicted_ratio(table, report) <= ratio + 1e-12
    assert report.achieved <= report.budget
    if ratio < 1:
        assert any(lr.factorized for lr in report.layers.values())


def test_lower_budget_never_costs_more(calib):
    table = _linear_table()
    compressor = balf.Compressor(_model(), calib, latency=table, progress=False)
    predicted = [
        _predicted_ratio(table, compressor.compress(balf.BALFConfig(r, metric="latency"))[1])
        for r in (0.6, 0.7, 0.8, 0.9)
    ]
    assert predicted == sorted(predicted)


@pytest.mark.parametrize("metric", ["latency", "flops", "params"])
@pytest.mark.parametrize("multiple", [4, 8])
def test_rank_multiple_is_respected(calib, metric, multiple):
    compressor = balf.Compressor(_model(), calib, latency=_linear_table(), progress=False)
    small, report = compressor.compress(balf.BALFConfig(0.6, metric=metric, rank_multiple=multiple))
    factorized = [lr for lr in report.layers.values() if lr.factorized]
    assert factorized
    for lr in factorized:
        assert lr.rank % multiple == 0 or lr.rank == lr.max_rank
    for name, lr in report.layers.items():
        if lr.factorized:
            assert small.get_submodule(name).rank == lr.rank


def test_layer_not_faster_stays_dense(calib):
    table = _linear_table(slow="2")
    compressor = balf.Compressor(_model(), calib, latency=table, progress=False)
    for ratio in (0.7, 0.8, 0.9):
        small, report = compressor.compress(balf.BALFConfig(ratio, metric="latency"))
        assert not report.layers["2"].factorized
        assert isinstance(small[2], nn.Linear)
        assert report.layers["2"].note is not None
        assert _predicted_ratio(table, report) <= ratio + 1e-12


def test_unreachable_latency_budget_names_the_smallest_ratio(calib):
    table = _linear_table(fixed=20.0)  # the fixed part is most of the latency
    compressor = balf.Compressor(_model(), calib, latency=table, progress=False)
    with pytest.raises(balf.BudgetError, match="use a ratio above"):
        compressor.compress(balf.BALFConfig(0.3, metric="latency"))


def test_latency_config_without_a_table_is_refused(calib):
    candidates = balf.Compressor(_model(), calib, progress=False).candidates(True)
    with pytest.raises(balf.BALFError, match="needs measured latencies"):
        balf.BALFConfig(0.5, metric="latency").select_ranks(candidates)


def test_config_round_trip_and_validation():
    config = balf.BALFConfig(0.5, metric="latency", rank_multiple=8)
    assert balf.config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert balf.config_for_mode("latency_auto", 0.5) == balf.BALFConfig(0.5, metric="latency")
    for bad in (0, -8, 2.5, True):
        with pytest.raises(balf.BALFError, match="rank_multiple"):
            balf.BALFConfig(0.5, rank_multiple=bad)


def test_curve_is_monotone_interpolated_and_capped_by_dense():
    latency = LayerLatency(1.0, [2, 4, 8], [0.3, 0.2, 0.9])  # noisy: 4 faster than 2
    assert np.allclose(
        latency.lowrank_at(np.array([1, 2, 3, 4, 6, 8, 9])), [0.3, 0.3, 0.3, 0.3, 0.6, 0.9, 0.9]
    )
    geometry = balf.layers.geometry.LayerGeometry("linear", 1, 16, 16)
    geo_cost = balf.ranks.costs.LayerCost(geometry, 1.0)
    curve = lat.LatencyCost.of(geo_cost, latency).curve("latency")
    assert curve.shape == (16,) and np.all(np.diff(curve) >= 0) and curve.max() == 1.0
    assert np.all(curve[7:] == 1.0)  # r >= 8 has as many weights as dense (16·16 = 8·32)


def test_measure_latency_fills_and_reuses_its_cache(tmp_path, monkeypatch):
    model = _model()
    compressor = balf.Compressor(
        model,
        torch.randn(64, 32),
        latency={"cache_dir": tmp_path, "points": 3, "min_run_time": 0.001, "batch_size": 2},
        progress=False,
    )
    compressor.compress(balf.BALFConfig(1.0, metric="latency", rank_multiple=4))
    table = compressor.latency_table()
    assert set(table.layers) == set(NAMES) and table.model > 0
    assert table.key["batch_size"] == 2 and table.key["library_version"] == balf.__version__
    # 3 grid ranks spread evenly over the multiples of 4 that are cheaper than dense
    # (r·(D+K) < D·K): Linear(32, 64) r <= 20, Linear(64, 64) r <= 28, Linear(64, 48) r <= 24
    assert {n: t.ranks for n, t in table.layers.items()} == {
        "0": [4, 12, 20],
        "2": [4, 16, 28],
        "4": [4, 12, 24],
    }
    assert len(list((tmp_path / "latency").glob("*.json"))) == 1

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr(lat.measure, "_measure_layer", no_measuring)
    again = lat.measure_latency(
        model,
        torch.randn(1, 32),
        compressor.targets,
        batch_size=2,
        rank_multiple=4,
        points=3,
        min_run_time=0.001,
        cache_dir=tmp_path,
        progress=False,
    )
    assert {n: t.ranks for n, t in again.layers.items()} == {
        n: t.ranks for n, t in table.layers.items()
    }
    assert LatencyTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table
