"""One registry of layer kinds: a kind reaches its layer's weight itself (no ``module.weight``
assumed), one low-rank class can serve several kinds, and save specs name the kind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import balf
from balf.layers import kind as kinds
from balf.layers.geometry import LayerGeometry


class Kernel(nn.Module):
    """y = x K + b with the weight held as ``kernel`` (D, K): no ``weight`` attribute."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(n_in, n_out) / n_in**0.5)
        self.bias = nn.Parameter(torch.randn(n_out))

    def forward(self, x):
        return x @ self.kernel + self.bias


class KernelKind(balf.LayerKind):
    name = "kernel"
    dense_type = Kernel
    lowrank_type = balf.LowRankLinear

    def weight(self, m):
        return m.kernel

    def geometry(self, m):
        return LayerGeometry(self.name, 1, *m.kernel.shape)

    def weight_matrices(self, m):
        return m.kernel.detach().unsqueeze(0)

    def output_rows(self, m, y):
        return (y - m.bias).reshape(1, -1, m.kernel.shape[1])

    def input_rows(self, m, x):
        yield x.reshape(1, -1, m.kernel.shape[0])

    def build(self, m, a, b):
        k = m.kernel
        return balf.LowRankLinear.from_factors(a[0].to(k), b[0].to(k), m.bias.detach())

    def dense_spec(self, m):
        return {"in_features": m.kernel.shape[0], "out_features": m.kernel.shape[1], "bias": True}


@pytest.fixture
def kernel_kind():
    saved = dict(kinds._BY_TYPE), dict(kinds._BY_NAME)
    kind = balf.register_layer_kind(KernelKind())
    yield kind
    for registry, old in zip((kinds._BY_TYPE, kinds._BY_NAME), saved, strict=True):
        registry.clear()
        registry.update(old)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(Kernel(16, 48), nn.ReLU(), nn.Linear(48, 8))


def test_a_layer_without_weight_attribute_compresses_saves_and_reloads(kernel_kind, tmp_path):
    model, x = _model(), torch.randn(64, 16)
    stats = balf.collect_statistics(model, x, progress=False)
    small, report = balf.compress(model, stats, balf.BALFConfig(0.5), progress=False)
    assert report.layers["0"].kind == "kernel" and report.layers["0"].factorized
    assert small[0].kind == "kernel"  # the low-rank module is labelled with its kind
    path = balf.save(small, tmp_path / "kernel.safetensors")
    assert [e["kind"] for e in balf.read_spec(path)["layers"]][0] == "kernel"
    loaded = balf.load(path, _model())
    assert torch.equal(loaded(x), small(x))


def test_statistics_of_another_weight_are_refused(kernel_kind):
    model, x = _model(), torch.randn(64, 16)
    stats = balf.collect_statistics(model, x, progress=False)
    with torch.no_grad():
        model[0].kernel.add_(1.0)
    with pytest.raises(balf.StatisticsError, match="different weights"):
        balf.compress(model, stats, balf.BALFConfig(0.5), progress=False)


def test_a_kind_name_belongs_to_one_dense_type(kernel_kind):
    class Other(KernelKind):
        dense_type = nn.Bilinear

    with pytest.raises(balf.BALFError, match="already registered for Kernel"):
        balf.register_layer_kind(Other())


def test_a_saved_layer_of_another_kind_is_refused(kernel_kind, tmp_path):
    model, x = _model(), torch.randn(64, 16)
    small, _ = balf.compress(model, x, balf.BALFConfig(0.5), progress=False)
    path = balf.save(small, tmp_path / "kernel.safetensors")
    other = nn.Sequential(nn.Linear(16, 48), nn.ReLU(), nn.Linear(48, 8))
    with pytest.raises(balf.SaveFormatError, match="is a Linear in this model but was a Kernel"):
        balf.load(path, other)


@pytest.mark.parametrize("name", ["linear", "conv1d", "conv2d", "hf_conv1d"])
def test_a_kind_name_is_declared_once_on_the_kind(name):
    """The low-rank class does not repeat its kind's name (nor its dense type); a layer built
    directly, not by a kind, still carries the name its save spec needs."""
    if name == "hf_conv1d":
        pytest.importorskip("transformers.pytorch_utils")
    kind = kinds.kind_named(name)
    assert "kind" not in vars(kind.lowrank_type) and "dense_type" not in vars(kind.lowrank_type)
    if name == "linear":
        a, b = torch.randn(6, 2), torch.randn(2, 4)
        layer = balf.LowRankLinear.from_linear(nn.Linear(6, 4), a, b)
        assert layer.kind == "linear" and layer.spec()["kind"] == "linear"


def test_resolvers_see_each_layer_type_once(monkeypatch):
    """A resolver runs on a type's first look-up, not in every hook call of every batch."""
    seen: list[type] = []
    monkeypatch.setattr(kinds, "_RESOLVERS", list(kinds._RESOLVERS))
    kinds.add_kind_resolver(seen.append)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(40, 8)
    balf.collect_statistics(model, list(x.split(10)), progress=False)
    assert seen.count(nn.Linear) == 1
