"""Scenarios that used to return a wrong result without a warning.

One test per scenario; each reproduces it and asserts the right result or a clear error.
Cache identity and integrity, shared and tied weights, calibration inputs, sweeps.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import warnings
from itertools import count

import numpy as np
import pytest
import torch
from torch import nn

import balf
from balf_paper.experiments.sweep import SweepConfig, run_sweep


def _cnn(act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        act(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        act(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def _fresh(model, data, config, **kwargs):
    """What a run without any cache gives."""
    return balf.compress(model, data, config, progress=False, **kwargs)[1]


def _entries(root, kind="activation-cache"):
    return sorted((root / kind).glob("*.pt"))


# -- 1. cache identity from content ----------------------------------------------------------


def test_cache_without_tag_does_not_reuse_statistics_of_other_data(tmp_path):
    model = _cnn()
    cache = balf.Cache(tmp_path)  # no tag, no size
    small = torch.randn(16, 3, 32, 32)
    large = torch.randn(64, 3, 48, 48)
    balf.compress(model, small, balf.BALFConfig(0.5), cache=cache, progress=False)
    report = balf.compress(model, large, balf.BALFConfig(0.5), cache=cache, progress=False)[1]
    assert report.model_flops_before == balf.count_flops(model, large[:1])
    assert report.ranks == _fresh(model, large, balf.BALFConfig(0.5)).ranks
    assert len(_entries(tmp_path)) == 2


def test_new_data_under_the_same_tag_and_size_is_not_reused(tmp_path):
    model = _cnn()
    cache = balf.Cache(tmp_path, data_tag="calib", data_size=32)
    first = torch.randn(32, 3, 8, 8)
    second = torch.randn(32, 3, 8, 8) * torch.linspace(0.1, 3, 8)  # another distribution
    balf.compress(model, first, balf.BALFConfig(0.5), cache=cache, progress=False)
    r = balf.compress(model, second, balf.BALFConfig(0.5), cache=cache, progress=False)[1]
    assert r.ranks == _fresh(model, second, balf.BALFConfig(0.5)).ranks
    assert len(_entries(tmp_path)) == 2


def test_same_data_in_a_loader_hits_the_cache_and_tag_is_only_a_label(tmp_path):
    model = _cnn()
    x = torch.randn(32, 3, 8, 8)
    calls = []
    model[0].register_forward_hook(lambda *_: calls.append(1))
    loader = [(x[i : i + 8], torch.zeros(8)) for i in range(0, 32, 8)]
    balf.compress(
        model, loader, balf.BALFConfig(0.5), cache=balf.Cache(tmp_path, "a"), progress=False
    )
    n = len(calls)
    balf.compress(
        model, loader, balf.BALFConfig(0.5), cache=balf.Cache(tmp_path, "b"), progress=False
    )
    assert len(calls) - n <= 3  # FLOP counts and the value check: the statistics were reused
    assert len(_entries(tmp_path)) == 1


def test_given_statistics_never_reuse_decompositions_of_other_statistics(tmp_path):
    model = _cnn()
    cache = balf.Cache(tmp_path, data_tag="t")
    x1 = torch.randn(32, 3, 8, 8)
    x2 = torch.randn(32, 3, 8, 8) * torch.linspace(0.05, 4, 3).view(1, 3, 1, 1)
    s1 = balf.collect_statistics(model, x1, progress=False)
    s2 = balf.collect_statistics(model, x2, progress=False)
    balf.Compressor(model, s1, cache=cache, progress=False).decompositions(True)
    cached = balf.Compressor(model, s2, cache=cache, progress=False).decompositions(True)
    fresh = balf.Compressor(model, s2, progress=False).decompositions(True)
    for name, dec in fresh.items():
        assert torch.allclose(cached[name].energies(), dec.energies()), name
    r2 = balf.compress(model, s2, balf.BALFConfig(0.3), cache=cache, progress=False)[1]
    assert r2.ranks == _fresh(model, s2, balf.BALFConfig(0.3)).ranks


@pytest.mark.parametrize("edit", ["activation", "non-persistent-buffer"])
def test_model_code_edits_without_weight_changes_miss_the_cache(tmp_path, edit):
    class Scaled(nn.Module):
        def __init__(self, scale: float) -> None:
            super().__init__()
            self.register_buffer("scale", torch.tensor(scale), persistent=False)

        def forward(self, x):
            return x * self.scale

    def make(variant):
        torch.manual_seed(0)
        model = _cnn(nn.Tanh if variant and edit == "activation" else nn.ReLU)
        model.insert(2, Scaled(5.0 if variant and edit != "activation" else 1.0))
        return model

    x = torch.randn(32, 3, 8, 8)
    cache = balf.Cache(tmp_path, data_tag="t")
    balf.compress(make(False), x, balf.BALFConfig(0.5), cache=cache, progress=False)
    edited = make(True)
    r = balf.compress(edited, x, balf.BALFConfig(0.5), cache=cache, progress=False)[1]
    assert len(_entries(tmp_path)) == 2
    assert r.ranks == _fresh(edited, x, balf.BALFConfig(0.5)).ranks


# -- 2. integrity ----------------------------------------------------------------------------


def test_flipped_bits_in_a_cache_entry_are_detected_and_recomputed(tmp_path):
    model = _cnn()
    x = torch.randn(32, 3, 8, 8)
    cache = balf.Cache(tmp_path)
    r1 = balf.compress(model, x, balf.BALFConfig(0.5), cache=cache, progress=False)[1]
    for path in [*_entries(tmp_path), *_entries(tmp_path, "factorization-cache")]:
        data = bytearray(path.read_bytes())
        data[-2000] ^= 0x10  # inside the tensor data, the pickle stays readable
        path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="checksum"):
        r2 = balf.compress(model, x, balf.BALFConfig(0.5), cache=cache, progress=False)[1]
    assert r2.ranks == r1.ranks
    assert r2.layers["2"].energy_kept == r1.layers["2"].energy_kept


def test_orphaned_tmp_files_are_removed_by_the_next_run(tmp_path):
    model = _cnn()
    x = torch.randn(8, 3, 8, 8)
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())
    orphan = tmp_path / "activation-cache" / f".abc.pt.pid999999999@{host}.x1y2.tmp"  # dead writer
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"\0" * 100)
    old = tmp_path / "factorization-cache" / ".def.pt.k3j2.tmp"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"\0" * 100)
    os.utime(old, (1, 1))  # a killed write from long ago (unknown writer)
    balf.compress(model, x, balf.BALFConfig(0.5), cache=balf.Cache(tmp_path), progress=False)
    assert not list(tmp_path.rglob("*.tmp"))


# -- 3. shared and tied weights --------------------------------------------------------------


class _TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 64)
        self.mid = nn.Linear(64, 64)
        self.head = nn.Linear(64, 100, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(torch.relu(self.mid(self.emb(ids))))


def test_a_head_tied_to_an_embedding_stays_dense_and_is_reported():
    model = _TiedLM()
    ids = torch.randint(0, 100, (16, 5))
    small, report = balf.compress(model, ids, balf.BALFConfig(0.5, metric="params"), progress=False)
    assert "head" in report.skipped and "shared" in report.skipped["head"]
    assert small.head.weight is small.emb.weight
    assert balf.count_params(small) <= balf.count_params(model)
    assert report.model_params_ratio == balf.count_params(small) / balf.count_params(model)


def test_two_linears_sharing_one_weight_stay_dense():
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(32, 32)
            self.b = nn.Linear(32, 32)
            self.b.weight = self.a.weight
            self.c = nn.Linear(32, 32)

        def forward(self, x):
            return self.c(self.a(x) + self.b(x * 2))

    model = TwoHeads()
    small, report = balf.compress(
        model, torch.randn(64, 32), balf.BALFConfig(0.5, metric="params"), progress=False
    )
    assert set(report.skipped) == {"a", "b"}
    assert small.a.weight is small.b.weight
    assert report.model_params_ratio == balf.count_params(small) / balf.count_params(model)


def test_an_aliased_module_is_factorized_once_and_the_input_model_is_untouched():
    class Aliased(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = nn.Linear(64, 64)
            self.q = self.p
            self.out = nn.Linear(64, 8)

        def forward(self, x):
            return self.out(self.q(torch.relu(self.p(x))))

    model = Aliased()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(64, 64)
    small, report = balf.compress(model, x, balf.BALFConfig(0.3), progress=False)
    assert small.q is small.p and small.p is not model.p
    with torch.no_grad():
        for p in small.parameters():
            p.zero_()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.q is model.p
    measured = balf.count_flops(small, x[:1]) / balf.count_flops(model, x[:1])
    assert report.model_flops_ratio == pytest.approx(measured)
    assert report.layer_flops_ratio == pytest.approx(report.achieved / report.budget * 0.3)


# -- 4. calibration inputs -------------------------------------------------------------------


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(16, 32)
        self.b = nn.Linear(32, 8)

    def forward(self, x, mask=None, *, scale: float = 1.0):
        h = torch.relu(self.a(x))
        if mask is not None:
            h = h * mask
        return self.b(h * scale)


def test_several_inputs_as_args_kwargs_batches_and_as_a_forward_callable():
    model = _TwoInputs()
    x = torch.randn(32, 16)
    mask = (torch.rand(32, 32) > 0.5).float()
    batches = [((x[i : i + 8], mask[i : i + 8]), {"scale": 2.0}) for i in range(0, 32, 8)]
    s1 = balf.collect_statistics(model, batches, progress=False)
    # reference: the hook sees the masked, scaled input of `b`
    h = torch.relu(model.a(x)) * mask * 2.0
    gram = (h @ model.b.weight.t()).double()
    assert torch.allclose(s1.layers["b"].gram[0], gram.t() @ gram, rtol=1e-5, atol=1e-5)
    dicts = [{"x": x[i : i + 8], "mask": mask[i : i + 8]} for i in range(0, 32, 8)]
    s2 = balf.collect_statistics(
        model, dicts, forward=lambda m, b: m(b["x"], b["mask"], scale=2.0), progress=False
    )
    assert torch.allclose(s1.layers["b"].gram, s2.layers["b"].gram)
    assert s1.num_samples == s2.num_samples == 32
    _, report = balf.compress(model, batches, balf.BALFConfig(0.5), progress=False)
    assert report.model_flops_ratio is not None and report.model_flops_ratio < 1


def test_an_infinite_iterable_stops_at_max_batches():
    def forever():
        for _ in count():
            yield torch.randn(4, 3, 8, 8)

    stats = balf.collect_statistics(_cnn(), forever(), max_batches=3, progress=False)
    assert stats.num_samples == 12
    _, report = balf.compress(
        _cnn(), forever(), balf.BALFConfig(0.5), max_batches=2, progress=False
    )
    assert report.model_flops_ratio < 1


@pytest.mark.parametrize("value", [np.float32(0.5), np.float64(0.5), np.int64(1)])
def test_numpy_scalars_are_accepted_as_ratios(value):
    assert balf.BALFConfig(value).ratio == float(value)
    assert balf.EnergyConfig(value).threshold == float(value)
    assert json.dumps(balf.UniformConfig(value).to_dict())


def test_all_zero_calibration_data_warns():
    with pytest.warns(UserWarning, match="all zero"):
        balf.collect_statistics(_cnn(), torch.zeros(8, 3, 8, 8), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        balf.collect_statistics(_cnn(), torch.randn(8, 3, 8, 8), progress=False)


@pytest.mark.parametrize(
    "images",
    [torch.full((8, 3, 8, 8), 0.5), torch.linspace(-1, 1, 8).view(8, 1, 1, 1).expand(8, 3, 8, 8)],
    ids=["one-value", "one-value-per-image"],
)
def test_constant_calibration_images_warn(images):
    """Blank images (a failed decode, a wrong normalisation) are not all zero, yet carry no
    information: layers looked low-rank and were cut hard at ``energy_kept ≈ 1.0``, silently."""
    with pytest.warns(UserWarning, match="every calibration sample is constant"):
        balf.collect_statistics(_cnn(), images, progress=False)


def test_varying_inputs_beside_constant_ones_do_not_warn():
    """Varying token ids, and images beside labels (one value per sample), do not warn."""
    model = nn.Sequential(nn.Embedding(10, 8), nn.Flatten(), nn.Linear(48, 4))
    ids = torch.randint(0, 10, (16, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        balf.collect_statistics(model, [((ids,), {})], progress=False)
        balf.collect_statistics(
            _cnn(), [(torch.randn(8, 3, 8, 8), torch.ones(8, dtype=torch.long))], progress=False
        )


# -- 5. sweeps -------------------------------------------------------------------------------


def _sweep(tmp_path, mode, knobs, compressor, stop_after=None):
    model = compressor.model
    x = torch.randn(16, 3, 8, 8)
    evaluation = [(x, torch.zeros(16, dtype=torch.long))]
    config = SweepConfig(dataset="toy", model="cnn", mode=mode, knobs=knobs, calib_size=16)
    return run_sweep(
        config,
        model,
        None,
        evaluation,
        tmp_path / mode,
        example_input=x[:1],
        compressor=compressor,
        progress=False,
        stop_after=stop_after,
        argv=[],
    )


@pytest.mark.parametrize("mode", ["energy", "uniform"])
def test_a_resumed_data_free_sweep_fills_layer_flops_ratio(tmp_path, mode):
    torch.manual_seed(0)
    model = _cnn()
    x = torch.randn(16, 3, 8, 8)
    # uninterrupted: an activation-aware sweep ran first on the shared compressor
    shared = balf.Compressor(model, x, progress=False)
    _sweep(tmp_path / "full", "flops_auto", [0.5], shared)
    full = _sweep(tmp_path / "full", mode, [0.5, 0.9], shared)
    # interrupted after one point, then resumed by a fresh process (nothing collected yet)
    _sweep(tmp_path / "resumed", mode, [0.5, 0.9], balf.Compressor(model, x, progress=False), 1)
    resumed = _sweep(
        tmp_path / "resumed", mode, [0.5, 0.9], balf.Compressor(model, x, progress=False)
    )
    for a, b in zip(full["points"][1:], resumed["points"][1:], strict=True):
        assert b["layer_flops_ratio"] is not None
        assert b["layer_flops_ratio"] == pytest.approx(a["layer_flops_ratio"])


@pytest.mark.parametrize(
    "content", ['{"config": {}}', "[]", '{"points": []}', '{"config": {"mode": 3}, "points": 1}']
)
def test_malformed_results_json_is_a_clear_error(tmp_path, content):
    (tmp_path / "energy").mkdir()
    (tmp_path / "energy" / "results.json").write_text(content)
    with pytest.raises(balf.BALFError, match="results.json"):
        _sweep(tmp_path, "energy", [0.5], balf.Compressor(_cnn(), None, progress=False))


def test_figures_are_written_with_the_usual_permissions(tmp_path):
    from balf_paper.experiments.plots import save_figure

    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    old = os.umask(0o022)
    try:
        save_figure(fig, tmp_path / "f")
    finally:
        os.umask(old)
    files = list(tmp_path.iterdir())
    assert files
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
