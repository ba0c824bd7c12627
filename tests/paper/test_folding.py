"""Model Folding (``balf_paper.folding``): groups, Hartigan k-means, merging, repairs, sweep mode.

Models are tiny (one block per stage, 8x8 inputs) or ResNet-20 without a forward pass where
only shapes and counts are checked; BN statistics and affine parameters are randomised so that
no BatchNorm is the identity.
"""

from __future__ import annotations

import copy
import io
import json
import math
from importlib import resources

import numpy as np
import pytest
import torch
from _experiments import experiment
from _fixtures import (
    tiny_sweep_args,
    use_only_fixture_fashion_mnist,
    write_fashion_mnist,
)
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

import balf
from balf_paper.experiments.sweep.config import SWEEP_VALUES, SweepConfig, default_knobs
from balf_paper.folding import (
    FOLDING_MODES,
    ar_scale,
    channel_groups,
    cluster_count,
    fold_model,
    fold_with_labels,
    hartigan_kmeans,
    inertia,
)
from balf_paper.folding.kmeans import balanced_partition
from balf_paper.models import CifarResNet, cifar_resnet, resnet20

# --------------------------------------------------------------------------- helpers


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model.eval()


def _tiny() -> CifarResNet:
    """ResNet-8 (one block per stage), 1 input channel."""
    return _randomise_bn(CifarResNet(1, num_classes=10, in_channels=1))


def _tv(block: type[nn.Module]) -> ResNet:
    return _randomise_bn(ResNet(block, [1, 1, 1, 1], num_classes=10))


X = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
X_RGB = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _make_identical(model: nn.Module, groups) -> None:
    """Every channel of every group := channel 0 on the producer side (identical activations);
    consumers keep their own slices, so the clustering still sees distinct features."""
    with torch.no_grad():
        for group in groups:
            for p in group.producers:
                conv, bn = model.get_submodule(p.conv), model.get_submodule(p.bn)
                for t in (conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var):
                    t[1:] = t[0]


def _cifar_params(widths, blocks, in_channels, classes) -> int:
    """Parameter count of a CIFAR ResNet with the given stage widths (conv + BN γ, β + fc)."""

    def conv_bn(cin, cout, ksize):
        return cin * cout * ksize * ksize + 2 * cout

    total = conv_bn(in_channels, widths[0], 3)
    cin = widths[0]
    for stage, w in enumerate(widths):
        for b in range(blocks):
            total += conv_bn(cin, w, 3) + conv_bn(w, w, 3)
            if b == 0 and (stage > 0 or cin != w):
                total += conv_bn(cin, w, 1)
            cin = w
    return total + widths[-1] * classes + classes


# --------------------------------------------------------------------------- groups


@pytest.mark.parametrize(
    "model, n_inner, n_streams",
    [
        pytest.param(_tiny, 3, 3, id="cifar-resnet8"),
        pytest.param(lambda: _tv(BasicBlock), 4, 4, id="tv-basic"),
        pytest.param(lambda: _tv(Bottleneck), 8, 5, id="tv-bottleneck"),
    ],
)
def test_every_channel_is_in_exactly_one_group(model, n_inner, n_streams):
    model = model()
    groups = channel_groups(model)
    assert sum(g.name.startswith("inner:") for g in groups) == n_inner
    assert sum(g.name.startswith("stream:") for g in groups) == n_streams
    produced = [p.conv for g in groups for p in g.producers]
    consumed = [c for g in groups for c in g.consumers]
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert sorted(produced) == sorted(convs)  # every conv output folded once
    assert sorted(consumed) == sorted([c for c in convs if c != "conv1"] + ["fc"])  # not the input


@pytest.mark.parametrize(
    "model, words",
    [
        pytest.param(
            lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)),
            ["Sequential", "CifarResNet", "torchvision.models.ResNet"],
            id="sequential",
        ),
        pytest.param(
            lambda: ResNet(Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=16),
            ["ResNet", "grouped"],
            id="resnext",
        ),
    ],
)
def test_unsupported_model_is_refused_with_a_clear_error(model, words):
    with pytest.raises(balf.BALFError) as info:
        fold_model(model(), 0.5, "none")
    for word in words:
        assert word in str(info.value)


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("repair", ["none", "ar"])
@pytest.mark.parametrize(
    "make, x",
    [
        pytest.param(_tiny, X, id="cifar-resnet8"),
        pytest.param(lambda: _tv(BasicBlock), X_RGB, id="tv-basic"),
        pytest.param(lambda: _tv(Bottleneck), X_RGB, id="tv-bottleneck"),
    ],
)
def test_keep_one_reproduces_the_outputs(make, x, repair):
    model = make()
    folded = fold_model(model, 1.0, repair)
    torch.testing.assert_close(_outputs(folded, x), _outputs(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("group", ["inner:layer1.0.conv1", "stream:conv1"])
def test_two_identical_channels_merge_without_changing_the_outputs(group):
    model = _tiny()
    g = {gr.name: gr for gr in channel_groups(model)}[group]
    with torch.no_grad():  # channel 5 := channel 3 in every producer; consumers read both
        for p in g.producers:
            conv, bn = model.get_submodule(p.conv), model.get_submodule(p.bn)
            for t in (conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t[5] = t[3]
    labels = torch.tensor([0, 1, 2, 3, 4, 3, *range(5, 15)])  # 16 channels -> 15 clusters
    folded = fold_with_labels(model, {group: labels}, repair="none")
    assert folded.get_submodule(g.producers[0].conv).out_channels == 15
    torch.testing.assert_close(_outputs(folded, X), _outputs(model, X), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("repair", ["none", "ar"])
def test_identical_channels_fold_to_any_width_without_changing_the_outputs(repair):
    # A merged channel stands for all its members (consumer sums) and has their activation
    # (producer means); AR's factor for rows with cosine 1 is 1. Whatever k-means returns,
    # the outputs are those of the unfolded model.
    model = _tiny()
    _make_identical(model, channel_groups(model))
    folded = fold_model(model, 0.3, repair, seed=0)
    assert folded.fc.in_features == int(64 * 0.3)
    torch.testing.assert_close(_outputs(folded, X), _outputs(model, X), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- shapes and saving


def test_resnet20_at_half_keep_is_a_half_width_resnet20(monkeypatch):
    model = resnet20(num_classes=10, in_channels=3).eval()
    folded = fold_model(model, 0.5, "ar")
    assert [folded.get_submodule(f"layer{s}.0.conv2").out_channels for s in (1, 2, 3)] == [
        8,
        16,
        32,
    ]
    assert folded.layer2[0].conv1.in_channels == 8 and folded.layer2[0].bn1.num_features == 16
    assert folded.layer3[0].shortcut[0].in_channels == 16 and folded.fc.in_features == 32
    assert folded.fc.out_features == 10 and folded.conv1.in_channels == 3  # never folded
    expected = _cifar_params((8, 16, 32), 3, 3, 10)
    assert balf.count_params(folded) == expected
    assert balf.count_params(model) == _cifar_params((16, 32, 64), 3, 3, 10)

    monkeypatch.setattr(cifar_resnet, "STAGE_WIDTHS", (8, 16, 32))
    reference = CifarResNet(3, num_classes=10, in_channels=3).eval()
    reference.load_state_dict(folded.state_dict())  # strict: same names and shapes
    x = torch.randn(1, 3, 32, 32)
    assert balf.count_flops(folded, x) == balf.count_flops(reference, x)
    torch.testing.assert_close(_outputs(reference, x), _outputs(folded, x))


def test_state_dict_and_whole_model_round_trip():
    folded = fold_model(_tiny(), 0.5, "ar")
    expected = _outputs(folded, X)
    buffer = io.BytesIO()
    torch.save(folded.state_dict(), buffer)
    clone = copy.deepcopy(folded)
    with torch.no_grad():
        for p in clone.parameters():
            p.zero_()
    buffer.seek(0)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(_outputs(clone, X), expected)

    buffer = io.BytesIO()
    torch.save(folded, buffer)
    buffer.seek(0)
    torch.testing.assert_close(_outputs(torch.load(buffer, weights_only=False), X), expected)


@pytest.mark.parametrize("repair", ["none", "ar", "r"])
def test_input_model_is_not_modified(repair):
    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_model(model, 0.5, repair, data=[X])
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training


def test_same_seed_same_model():
    model = _tiny()
    a = fold_model(model, 0.6, "none", seed=3).state_dict()
    b = fold_model(model, 0.6, "none", seed=3).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- repairs


@pytest.mark.parametrize(
    "rows, expected",
    [
        pytest.param(torch.eye(4), 2.0, id="orthogonal-N4"),
        pytest.param(torch.tensor([[1.0, 0], [2.0, 0], [0, 3.0]]), math.sqrt(9 / 5), id="E1/3"),
        pytest.param(torch.tensor([[1.0, 0], [3.0, 0]]), 1.0, id="parallel"),
        pytest.param(torch.tensor([[1.0, 2.0]]), 1.0, id="singleton"),
    ],
)
def test_ar_scale_formula(rows, expected):
    # √(N / (1 + (N−1)·E)), E = mean pairwise cosine similarity
    assert ar_scale(rows) == pytest.approx(expected)


def test_ar_rescales_gamma_of_merged_clusters_only():
    model = _tiny()
    conv, bn = model.layer1[0].conv1, model.layer1[0].bn1
    with torch.no_grad():  # rows 0, 1 parallel, row 2 orthogonal to both: E = 1/3
        conv.weight[:3] = 0
        conv.weight[0, 0, 0, 0], conv.weight[1, 0, 0, 0], conv.weight[2, 1, 1, 1] = 1.0, 2.5, -4.0
    gamma, beta = bn.weight.detach().clone(), bn.bias.detach().clone()
    labels = torch.tensor([0, 0, 0, *range(1, 14)])
    folded = fold_with_labels(model, {"inner:layer1.0.conv1": labels}, repair="ar")
    merged = folded.layer1[0].bn1
    assert merged.num_features == 14
    factor = math.sqrt(3 / (1 + 2 * (1 / 3)))
    assert merged.weight[0].item() == pytest.approx(gamma[:3].mean().item() * factor, rel=1e-6)
    torch.testing.assert_close(merged.weight[1:], gamma[3:])  # singletons unchanged
    torch.testing.assert_close(merged.bias[0], beta[:3].mean())  # β averaged
    torch.testing.assert_close(merged.bias[1:], beta[3:])
    torch.testing.assert_close(merged.running_var, torch.full((14,), 1 - merged.eps))


def test_r_refuses_to_run_without_data():
    with pytest.raises(balf.BALFError, match="data"):
        fold_model(_tiny(), 0.5, "r")


class _Untouchable:
    """A data source that fails the test when iterated."""

    def __iter__(self):
        raise AssertionError("data-free folding iterated the data")


@pytest.mark.parametrize("repair", ["ar", "none"])
def test_data_free_repairs_never_iterate_the_data(repair):
    fold_model(_tiny(), 0.5, repair, data=_Untouchable())


def test_r_recomputes_batchnorm_statistics_from_the_data():
    model = _tiny()
    x1, x2 = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    folded = fold_model(model, 1.0, "r", data=[(x1, None), (x2, None)])
    with torch.no_grad():  # momentum None: the plain average of the two batches' statistics
        y1, y2 = model.conv1(x1), model.conv1(x2)
    mean = (y1.mean((0, 2, 3)) + y2.mean((0, 2, 3))) / 2
    var = (y1.var((0, 2, 3)) + y2.var((0, 2, 3))) / 2  # unbiased, as BatchNorm stores it
    torch.testing.assert_close(folded.bn1.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(folded.bn1.running_var, var, rtol=1e-4, atol=1e-5)
    assert folded.bn1.momentum == model.bn1.momentum and not folded.training


def test_invalid_arguments():
    model = _tiny()
    with pytest.raises(balf.BALFError, match="repair"):
        fold_model(model, 0.5, "bogus")
    for keep in (0.0, 1.5, float("nan"), True):
        with pytest.raises(balf.BALFError, match="keep"):
            fold_model(model, keep, "none")


@pytest.mark.parametrize("n, keep, k", [(16, 0.5, 8), (64, 0.7, 44), (10, 0.05, 1), (7, 1.0, 7)])
def test_cluster_count(n, keep, k):
    assert cluster_count(n, keep) == k


# --------------------------------------------------------------------------- k-means


@pytest.mark.parametrize("d", [5, 60], ids=["d<n", "d>n"])
@pytest.mark.parametrize("seed", range(4))
def test_hartigan_never_worse_than_the_initial_partition(seed, d):
    x = np.random.default_rng(seed).normal(size=(40, d))
    init = balanced_partition(40, 6, np.random.default_rng(100 + seed))
    result = hartigan_kmeans(x, 6, init=init)
    assert result.initial_inertia == pytest.approx(inertia(x, init))
    assert result.inertia <= result.initial_inertia + 1e-9
    assert sorted(np.unique(result.labels)) == list(range(6))  # no cluster emptied
    best = hartigan_kmeans(x, 6, seed=seed)
    assert best.inertia <= best.initial_inertia + 1e-9


@pytest.mark.parametrize("d", [4, 50], ids=["d<n", "d>n"])
def test_hartigan_finds_well_separated_clusters(d):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, d)) * 100
    truth = np.repeat(np.arange(3), 10)
    x = centres[truth] + rng.normal(size=(30, d)) * 0.1
    labels = hartigan_kmeans(x, 3, seed=0).labels
    mapping = {t: set(labels[truth == t].tolist()) for t in range(3)}
    assert all(len(v) == 1 for v in mapping.values())  # each true cluster in one label
    assert len(set.union(*mapping.values())) == 3  # and three different labels


def test_hartigan_edge_cases():
    x = np.arange(6.0)[:, None]
    assert hartigan_kmeans(x, 6).labels.tolist() == list(range(6))
    assert hartigan_kmeans(x, 1).labels.tolist() == [0] * 6
    with pytest.raises(balf.BALFError):
        hartigan_kmeans(x, 0)


# --------------------------------------------------------------------------- sweep runner


def test_sweep_config_and_default_knobs_know_the_folding_modes():
    table = resources.files("balf_paper.experiments").joinpath(SWEEP_VALUES).read_text()
    values = json.loads(table)
    for mode in FOLDING_MODES:
        SweepConfig("fashion-mnist", "resnet20", mode, [0.5], 8)
        assert default_knobs(mode, "resnet20") == values["folding_keep"]
    with pytest.raises(balf.BALFError, match="folding_ar"):
        SweepConfig("fashion-mnist", "resnet20", "folding_xx", [0.5], 8)


def test_factorize_sweep_script_runs_folding_modes(tmp_path, monkeypatch):
    root = write_fashion_mnist(tmp_path / "data")
    use_only_fixture_fashion_mnist(monkeypatch, tmp_path)
    script = experiment("factorize", "fashion-mnist")
    modes = ["folding_ar", "folding_r"]
    script.main(
        [
            *tiny_sweep_args(root, tmp_path),
            "--modes",
            *modes,
            "--knobs",
            "0.5",
        ]
    )
    out = tmp_path / "results" / "fashion-mnist" / "resnet20"
    for mode in modes:
        results = json.loads((out / mode / "results.json").read_text())
        assert results["config"]["mode"] == mode
        original, point = results["points"]
        assert original["knob"] == "original" and point["knob"] == 0.5
        assert point["repair"] == FOLDING_MODES[mode] and point["ranks"] == {}
        assert point["kept_channels"]["stream:conv1"] == 8
        assert len(point["kept_channels"]) == 12  # 9 inner groups + 3 streams of ResNet-20
        assert point["params"] == _cifar_params((8, 16, 32), 3, 1, 10)
        assert 0.2 < point["params_ratio"] < 0.3 and 0.2 < point["flops_ratio"] < 0.3
        metrics = point["metrics"]
        assert 0.0 <= metrics["accuracy"] <= 1.0 and math.isfinite(metrics["loss"])
