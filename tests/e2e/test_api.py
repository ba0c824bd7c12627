"""Public API: configs, compress(), reports, caches, errors, end to end on real models."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

import balf
from balf_paper.models import create_model


def _small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


@pytest.fixture
def cnn_and_data():
    return _small_cnn(), torch.randn(32, 3, 8, 8)


# -- configs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda v: balf.BALFConfig(v),
        lambda v: balf.UniformConfig(v),
        lambda v: balf.RankRatioConfig(v),
        lambda v: balf.EnergyConfig(v),
    ],
    ids=["balf", "uniform", "rank-ratio", "energy"],
)
@pytest.mark.parametrize("value", [0, -0.5, 1.01, float("nan"), float("inf"), "0.5"])
def test_knob_outside_unit_interval_is_rejected(make, value):
    with pytest.raises(balf.BALFError, match=r"\(0, 1\]"):
        make(value)


def test_invalid_metric_and_iterations_are_rejected():
    with pytest.raises(balf.BALFError, match="metric"):
        balf.BALFConfig(0.5, metric="watts")
    with pytest.raises(balf.BALFError, match="n_iters"):
        balf.BALFConfig(0.5, n_iters=-1)


@pytest.mark.parametrize("mode", sorted(balf.MODES))
def test_configs_round_trip_through_json(mode):
    config = balf.config_for_mode(mode, 0.7)
    assert config.mode == mode
    assert balf.config_from_dict(json.loads(json.dumps(config.to_dict()))) == config


# -- compress -------------------------------------------------------------------------------


def test_input_model_is_untouched_unless_inplace(cnn_and_data):
    model, x = cnn_and_data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small, _ = balf.compress(model, x, balf.BALFConfig(0.5), progress=False)
    assert small is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not isinstance(m, balf.LowRankConv2d) for m in model.modules())
    same, _ = balf.compress(model, x, balf.BALFConfig(0.5), inplace=True, progress=False)
    assert same is model
    assert any(isinstance(m, (balf.LowRankConv2d, balf.LowRankLinear)) for m in model.modules())


def test_report_contents_and_json(cnn_and_data):
    model, x = cnn_and_data
    small, report = balf.compress(model, x, balf.BALFConfig(0.5), progress=False)
    d = json.loads(json.dumps(report.to_dict()))
    assert set(d["layers"]) == {"0", "2", "6"}
    modules = dict(small.named_modules())
    for name, lr in report.layers.items():
        # the reported rank is the installed one, and its energy is the decomposition's e(r)
        assert lr.factorized == isinstance(modules[name], (balf.LowRankConv2d, balf.LowRankLinear))
        assert lr.rank == (modules[name].rank if lr.factorized else lr.max_rank)
        assert 0 < lr.energy_kept <= 1
    assert report.achieved <= report.budget
    assert report.layer_flops_ratio <= 0.5
    assert set(report.timings) >= {"statistics", "decomposition", "allocation", "replacement"}
    measured = balf.count_flops(small, x[:1]) / balf.count_flops(model, x[:1])
    assert report.model_flops_ratio == pytest.approx(measured)
    assert report.model_params_ratio == pytest.approx(
        balf.count_params(small) / balf.count_params(model)
    )
    assert d["model_flops_ratio"] == pytest.approx(measured)


@pytest.mark.parametrize(
    "config",
    [
        balf.EnergyConfig(0.9, activation_aware=False),
        balf.UniformConfig(0.5, activation_aware=False),
        balf.RankRatioConfig(0.3, activation_aware=False),
    ],
    ids=lambda c: c.mode,
)
def test_data_free_modes_need_no_data(cnn_and_data, config):
    model, x = cnn_and_data
    small, report = balf.compress(model, None, config, progress=False)
    for lr in report.layers.values():
        assert lr.energy_kept is None
        assert 0 < lr.weight_energy_kept <= 1
    assert torch.isfinite(small(x)).all()


def test_activation_aware_mode_without_data_is_a_clear_error(cnn_and_data):
    model, _ = cnn_and_data
    with pytest.raises(balf.BALFError, match="needs calibration data"):
        balf.compress(model, None, balf.BALFConfig(0.5), progress=False)


def test_budget_below_minimum_is_a_clear_error(cnn_and_data):
    model, x = cnn_and_data
    with pytest.raises(balf.BudgetError, match="use a ratio >="):
        balf.compress(model, x, balf.BALFConfig(0.01), progress=False)


def test_layers_argument_restricts_compression(cnn_and_data):
    model, x = cnn_and_data
    small, report = balf.compress(model, x, balf.BALFConfig(0.3), layers=["2"], progress=False)
    assert list(report.layers) == ["2"]
    assert isinstance(small[0], nn.Conv2d) and isinstance(small[6], nn.Linear)


def test_statistics_of_another_model_are_rejected(cnn_and_data):
    model, x = cnn_and_data
    stats = balf.collect_statistics(_small_cnn(), x, progress=False)
    with pytest.raises(balf.StatisticsError, match="different weights"):
        balf.compress(model, stats, balf.BALFConfig(0.5), progress=False)
    partial = balf.collect_statistics(model, x, layers=["0"], progress=False)
    with pytest.raises(balf.StatisticsError, match="no entry for layer '2'"):
        balf.compress(model, partial, balf.BALFConfig(0.5), progress=False)


def test_statistics_and_decompositions_are_reused_across_ratios(cnn_and_data, monkeypatch):
    model, x = cnn_and_data
    compressor = balf.Compressor(model, x, progress=False)
    calls = []
    import balf.pipeline.cached as cache_module

    original = cache_module.decompose_layers

    def counted(layers, *a, **kw):
        calls.extend([1] * len(layers))
        return original(layers, *a, **kw)

    monkeypatch.setattr(cache_module, "decompose_layers", counted)
    achieved = [compressor.compress(balf.BALFConfig(r))[1].achieved for r in (0.4, 0.6, 0.8)]
    assert len(calls) == 3  # one per layer, once
    assert achieved == sorted(achieved)


# -- caches ---------------------------------------------------------------------------------


def _count_forwards(model):
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_cache_hit_miss_stale_and_corrupt(tmp_path, cnn_and_data):
    model, x = cnn_and_data
    cache = balf.Cache(tmp_path, data_tag="random", data_size=len(x))
    calls = _count_forwards(model)
    r1 = balf.compress(model, x, balf.BALFConfig(0.5), cache=cache, progress=False)[1]
    n_after_first = len(calls)
    stat_files = list((tmp_path / "activation-cache").glob("*.pt"))
    dec_files = list((tmp_path / "factorization-cache").glob("*.pt"))
    assert len(stat_files) == 1 and len(dec_files) == 1

    # hit: no calibration forward pass, identical ranks
    r2 = balf.compress(model, x, balf.BALFConfig(0.5), cache=cache, progress=False)[1]
    assert r2.ranks == r1.ranks
    assert len(calls) - n_after_first <= 3  # two FLOP counts, the value check; no calibration

    # the tag is a label: the same data under another tag hits; other data misses
    other = balf.Cache(tmp_path, data_tag="other", data_size=len(x))
    balf.compress(model, x, balf.BALFConfig(0.5), cache=other, progress=False)
    assert len(list((tmp_path / "activation-cache").glob("*.pt"))) == 1
    balf.compress(model, x[:16], balf.BALFConfig(0.5), cache=other, progress=False)
    assert len(list((tmp_path / "activation-cache").glob("*.pt"))) == 2

    # corrupt: garbage bytes are recomputed with a warning
    stat_files[0].write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="corrupt cache entry"):
        r3 = balf.compress(model, x, balf.BALFConfig(0.5), cache=cache, progress=False)[1]
    assert r3.ranks == r1.ranks

    # stale: an entry written under another key/version is recomputed with a warning
    entry = torch.load(dec_files[0], weights_only=True)
    entry["meta"]["version"] = "0.0.0-old"
    torch.save(entry, dec_files[0])
    with pytest.warns(UserWarning, match="stale cache entry"):
        r4 = balf.compress(model, x, balf.BALFConfig(0.5), cache=cache, progress=False)[1]
    assert r4.ranks == r1.ranks
    assert not list(tmp_path.rglob("*.tmp"))


def test_cache_misses_when_weights_change(tmp_path, cnn_and_data):
    model, x = cnn_and_data
    cache = balf.Cache(tmp_path, data_tag="random", data_size=len(x))
    balf.compress(model, x, balf.BALFConfig(0.5), cache=cache, progress=False)
    with torch.no_grad():
        model[0].weight.mul_(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        balf.compress(model, x, balf.BALFConfig(0.5), cache=cache, progress=False)
    assert len(list((tmp_path / "activation-cache").glob("*.pt"))) == 2


# -- end to end -----------------------------------------------------------------------------


def _tiny_vit():
    timm = pytest.importorskip("timm")
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=10
    )
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return model


MODELS = [
    ("cifar-resnet20", lambda: create_model("resnet20", pretrained=False), (3, 32, 32)),
    ("tiny-vit", _tiny_vit, (3, 32, 32)),
]


@pytest.mark.parametrize(("name", "make", "shape"), MODELS, ids=[m[0] for m in MODELS])
def test_end_to_end_budgets_finite_outputs_and_export(name, make, shape):
    model = make().eval()
    x = torch.randn(16, *shape)
    compressor = balf.Compressor(model, x, progress=False)
    for ratio in (0.3, 0.6, 0.9):
        small, report = compressor.compress(balf.BALFConfig(ratio))
        assert report.layer_flops_ratio <= ratio + 1e-12
        assert report.model_flops_ratio < 1
        with torch.no_grad():
            out = small(x[:4])
        assert torch.isfinite(out).all()
        exported = torch.export.export(small, (x[:2],))
        torch.testing.assert_close(exported.module()(x[:2]), small(x[:2]))


BARE_LAYERS = [
    ("linear", lambda: nn.Linear(32, 24), (40, 32), balf.LowRankLinear),
    ("conv2d", lambda: nn.Conv2d(8, 16, 3, padding=1), (4, 8, 6, 6), balf.LowRankConv2d),
    ("conv1d", lambda: nn.Conv1d(8, 16, 3, padding=1), (4, 8, 12), balf.LowRankConv1d),
]


@pytest.mark.parametrize(
    ("case", "make", "shape", "cls"), BARE_LAYERS, ids=[c[0] for c in BARE_LAYERS]
)
def test_a_bare_layer_is_compressed_into_its_replacement(case, make, shape, cls):
    layer, x = make(), torch.randn(shape)
    small, report = balf.compress(layer, x, balf.BALFConfig(0.5), progress=False)
    assert type(small) is cls
    assert report.layers[""].factorized and report.layers[""].kind == case
    assert small(x).shape == layer(x).shape


def test_written_files_are_readable_by_others(tmp_path):
    import os
    import stat

    stats = balf.collect_statistics(nn.Linear(3, 2), torch.randn(4, 3), progress=False)
    stats.save(tmp_path / "s.pt")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "s.pt").st_mode) == 0o666 & ~umask
