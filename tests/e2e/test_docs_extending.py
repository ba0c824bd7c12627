"""docs/extending.md, followed verbatim: a layer kind, a rank rule, a metric.

The ``python`` blocks under "A new layer kind", "A new rank rule" and "A new budget metric" are
executed exactly as docs/extending.md shows them (in a module of their own); the toy layer must then
behave like a built-in kind (activation error = Eckart–Young bound, full rank = dense layer,
compressed inside a model, saved and reloaded, timed under a latency budget), the toy rule like a
built-in mode (registered, labelled, used by ``balf.compress``, its ``report.config``
round-trips) and the toy metric like ``"params"`` (the allocator meets its budget).
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import balf
from balf.ranks.latency import LatencyTable, LayerLatency
from balf.ranks.modes import mode_spec, registered_modes
from balf_paper.experiments.plots import mode_style
from balf_paper.experiments.sweep import default_knobs
from balf_paper.experiments.tables import mode_label

PAGE = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def _section_code(title: str) -> str:
    text = PAGE.read_text()
    part = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", part, flags=re.S)
    assert len(blocks) == 1, f"expected one python block under {title!r}"
    return blocks[0]


@pytest.fixture(scope="module")
def page():
    """The page's blocks run in a fresh module; the registrations are undone afterwards."""
    from balf.layers import kind
    from balf.ranks import costs, modes
    from balf_paper.experiments import modes as displays

    registries = [
        kind._BY_TYPE,
        kind._BY_NAME,
        modes._REGISTRY,
        modes._CLASSES,
        costs._METRICS,
        displays._DISPLAYS,
        displays._SWEEP_VALUES,
    ]
    saved = [dict(r) for r in registries]
    module = types.ModuleType("docs_extending")
    sys.modules[module.__name__] = module
    for title in ("A new layer kind", "A new rank rule", "A new budget metric"):
        exec(compile(_section_code(title), f"docs/extending.md ({title})", "exec"), module.__dict__)
    yield module
    del sys.modules[module.__name__]
    for registry, old in zip(registries, saved, strict=True):
        registry.clear()
        registry.update(old)


def test_the_toy_layer_reaches_the_eckart_young_bound(page):
    torch.manual_seed(0)
    layer = page.ToyDense(12, 9).double()
    x = torch.randn(40, 12, dtype=torch.float64)
    stats = balf.collect_statistics(layer, x, progress=False)
    dec = balf.decompose_layer(layer, stats.layers[""])
    with torch.no_grad():
        y = layer(x) - layer.bias
    sigma2 = torch.linalg.svdvals(y).square()
    for rank in (1, 4, 9):
        small = balf.factorize_layer(layer, dec, rank)
        with torch.no_grad():
            err = float((layer(x) - small(x)).square().sum())
        assert err == pytest.approx(float(sigma2[rank:].sum()), rel=1e-6, abs=1e-9)
    with torch.no_grad():
        torch.testing.assert_close(small(x), layer(x))  # rank 9 = full rank


def test_the_toy_layer_is_compressed_inside_a_model(page):
    torch.manual_seed(0)
    model = nn.Sequential(page.ToyDense(16, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(64, 16)
    small, report = balf.compress(model, x, balf.BALFConfig(0.5), progress=False)
    assert report.layers["0"].kind == "toy_dense" and report.layers["0"].factorized
    assert isinstance(small[0], balf.LowRankLinear)
    assert report.layer_flops_ratio <= 0.5 + 1e-12


def test_the_toy_rank_rule_is_a_mode_like_the_others(page):
    config = page.HalfRankConfig(0.25)
    assert config.mode == "half_rank" and config.knob == 0.25
    assert mode_spec("half_rank").config_class is page.HalfRankConfig
    assert list(registered_modes())[-1] == "half_rank"
    assert mode_label("half_rank") == "Half rank" and mode_style("half_rank").marker == "*"
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    _, report = balf.compress(model, torch.randn(64, 16), config, progress=False)
    assert report.ranks == {"0": 4, "2": 2}
    expected = {"type": "HalfRankConfig", "fraction": 0.25, "activation_aware": True}
    assert config.to_dict() == expected
    assert balf.config_for_mode("half_rank", 0.5) == page.HalfRankConfig(0.5)
    assert balf.config_from_dict(report.config) == config  # report.config round-trips
    with pytest.raises(balf.BALFError, match="no default knobs"):
        default_knobs("half_rank", "resnet20")


def test_the_toy_layer_saves_and_reloads(page, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(page.ToyDense(16, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(64, 16)
    small, report = balf.compress(model, x, balf.BALFConfig(0.5), progress=False)
    spec = balf.spec_from_report(report, model)
    assert balf.model_spec(small)["layers"] == spec["layers"]
    assert spec["layers"][0]["kind"] == "toy_dense"
    path = balf.save(small, tmp_path / "toy.safetensors")
    fresh = nn.Sequential(page.ToyDense(16, 32), nn.ReLU(), nn.Linear(32, 4))
    loaded = balf.load(path, fresh)
    assert torch.equal(loaded(x), small(x))
    assert balf.model_spec(loaded)["layers"] == spec["layers"]


def test_the_toy_layer_works_under_a_latency_budget(page):
    torch.manual_seed(0)
    model = nn.Sequential(page.ToyDense(64, 256), nn.ReLU(), nn.Linear(256, 64))
    x = torch.randn(32, 64)
    compressor = balf.Compressor(
        model, x, latency={"min_run_time": 0.002, "points": 4}, progress=False
    )
    table = compressor.latency_table()  # the toy layer is timed dense and factorized
    assert set(table.layers) == {"0", "2"} and table.layers["0"].dense > 0
    # what is faster on this machine varies: allocate on an injected table of the same layers
    fake = {name: LayerLatency(1.0, [1, 8, 32], [0.1, 0.2, 0.5]) for name in table.layers}
    compressor.latency = LatencyTable(fake, 2.5, dict(table.key))
    small, report = compressor.compress(balf.BALFConfig(0.6, metric="latency"))
    assert report.metric == "latency" and report.layers["0"].kind == "toy_dense"
    assert small(x).shape == model(x).shape


def test_the_toy_metric_budgets_the_allocator(page):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))
    x = torch.randn(128, 32)
    compressor = balf.Compressor(model, x, progress=False)
    _, report = compressor.compress(balf.BALFConfig(0.5, metric="weight_bytes"))
    metric = page.WeightBytes()
    candidates = compressor.candidates(activation_aware=True)
    full = sum(float(metric.curve(c.cost)[-1]) for c in candidates)  # the cost at full rank
    kept = sum(float(metric.curve(c.cost)[report.ranks[c.name] - 1]) for c in candidates)
    assert kept <= 0.5 * full * (1 + 1e-9)
    assert report.metric == "weight_bytes" and report.budget == pytest.approx(0.5 * full)
    assert report.mode == "weight_bytes_auto"
