"""Layer adapters keyed by module type: lookup, registration, skipped layers, attention models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import balf
from balf.layers import LayerKind, kind_for
from balf.layers.conv1d import Conv1dKind
from balf.layers.conv2d import Conv2dKind
from balf.layers.linear import LinearKind


class TinyAttention(nn.Module):
    """Linear embedding, ``nn.MultiheadAttention`` (whose ``out_proj`` is never called), head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x):  # (B, T, 6) -> (B, T, 4)
        h = self.embed(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head(a + h)


@pytest.mark.parametrize(
    ("module", "adapter"),
    [
        (nn.Linear(3, 2), LinearKind),
        (nn.MultiheadAttention(4, 1).out_proj, LinearKind),  # a Linear subclass
        (nn.Conv2d(3, 2, 1), Conv2dKind),
        (nn.Conv1d(3, 2, 1), Conv1dKind),
    ],
    ids=["linear", "linear-subclass", "conv2d", "conv1d"],
)
def test_kind_is_found_by_module_type(module, adapter):
    assert type(kind_for(module)) is adapter


@pytest.mark.parametrize(
    "module", [nn.ReLU(), nn.Conv3d(2, 2, 1), nn.ConvTranspose2d(2, 2, 3)], ids=lambda m: str(m)
)
def test_modules_without_adapter_have_none(module):
    assert kind_for(module) is None


def test_register_layer_kind_rejects_what_is_not_a_kind():
    with pytest.raises(TypeError, match="LayerKind instance"):
        balf.register_layer_kind(nn.Linear(2, 2))
    bad = LinearKind()
    bad.dense_type = int
    with pytest.raises(TypeError, match="nn.Module subclass"):
        balf.register_layer_kind(bad)
    assert issubclass(LinearKind, LayerKind)


def test_the_names_of_balf_0_1_warn_and_still_work():
    with pytest.warns(DeprecationWarning, match="LayerKind"):
        assert balf.LayerAdapter is LayerKind
    with pytest.warns(DeprecationWarning, match="balf.layers.dispatch"):
        from balf.representation import geometry_of  # noqa: F401
    with pytest.warns(DeprecationWarning, match="register_layer_kind"):
        balf.register_layer_adapter(nn.Linear, LinearKind())


def test_unsupported_candidates_are_listed_in_skipped_with_the_reason():
    model = nn.Sequential(
        nn.Conv1d(3, 4, 3, padding=1, padding_mode="reflect"),
        nn.Unflatten(2, (1, 1, 5)),
        nn.Conv3d(4, 4, 1),
        nn.Flatten(),
        nn.Linear(4 * 5, 2),
    )
    x = torch.randn(6, 3, 5)
    _, report = balf.compress(model, x, balf.BALFConfig(0.6), progress=False)
    assert "Conv1d with padding_mode='reflect'" in report.skipped["0"]
    assert "unsupported layer type Conv3d" in report.skipped["2"]
    assert list(report.layers) == ["4"]


@pytest.mark.parametrize(
    "config",
    [balf.BALFConfig(0.6), balf.EnergyConfig(0.95), balf.EnergyConfig(0.9, activation_aware=False)],
    ids=lambda c: c.mode,
)
def test_a_model_with_multihead_attention_compresses(config):
    torch.manual_seed(0)
    model = TinyAttention().eval()
    x = torch.randn(8, 5, 6)
    data = x if config.activation_aware else None
    small, report = balf.compress(model, data, config, progress=False)
    # the attention's projections are layers too (the attention is unpacked)
    assert report.skipped == {}
    assert list(report.layers) == ["embed", "attn.in_proj", "attn.out_proj", "head"]
    assert type(model.attn) is nn.MultiheadAttention  # the caller's model is untouched
    with torch.no_grad():
        out = small(x)
    assert out.shape == (8, 5, 4) and torch.isfinite(out).all()


def test_requesting_an_attention_child_is_a_clear_error():
    model = TinyAttention()
    model.attn = nn.MultiheadAttention(16, 2, batch_first=True, add_bias_kv=True)  # not unpacked
    with pytest.raises(balf.BALFError, match="'attn.out_proj' cannot be factorized: inside"):
        balf.collect_statistics(model, torch.randn(2, 5, 6), layers=["attn.out_proj"])


def test_a_conv1d_model_meets_its_budget_and_exports():
    model = nn.Sequential(
        nn.Conv1d(3, 16, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(16, 32, 3, stride=2, groups=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).eval()
    x = torch.randn(16, 3, 20)
    small, report = balf.compress(model, x, balf.BALFConfig(0.5), progress=False)
    assert report.layer_flops_ratio <= 0.5 + 1e-12
    assert {lr.kind for lr in report.layers.values()} == {"conv1d", "linear"}
    assert isinstance(small[2], balf.LowRankConv1d)
    exported = torch.export.export(small, (x[:2],))
    torch.testing.assert_close(exported.module()(x[:2]), small(x[:2]))
