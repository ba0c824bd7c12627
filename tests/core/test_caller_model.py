"""The caller's model is left as it was: train/eval flags after a latency compression and after
fold_batchnorm, spectral_norm buffers (hook-based and parametrizations, whole-model and block by
block), and frozen layers staying frozen.
"""

import pytest
import torch
from torch import nn

import balf


def _flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def _wide() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )


def test_latency_compression_keeps_the_callers_train_mode():
    model = _wide().train()
    model[1].eval()  # a mixed state must come back as it was
    before = _flags(model)
    try:
        balf.compress(
            model,
            torch.randn(32, 256),
            balf.BALFConfig(0.9, metric="latency"),
            latency={"min_run_time": 0.005, "points": 3},
            progress=False,
        )
    except balf.BudgetError:
        pass  # the flags must be restored either way
    assert _flags(model) == before


def test_measure_latency_keeps_the_callers_train_mode():
    model = _wide().train()
    before = _flags(model)
    layers = {"0": model[0]}
    balf.ranks.latency.measure_latency(
        model, torch.randn(1, 256), layers, min_run_time=0.005, points=2, progress=False
    )
    assert _flags(model) == before


def test_fold_batchnorm_does_not_switch_the_caller_to_eval():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).train()
    before = _flags(model)
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    folded = balf.io.export.fold_batchnorm(model, torch.randn(1, 3, 8, 8))
    assert _flags(model) == before
    assert all(torch.equal(v, stats[k]) for k, v in model.state_dict().items())
    assert not folded.training


def test_spectral_norm_buffers_of_a_train_mode_model_are_unchanged():
    model = nn.Sequential(
        nn.utils.spectral_norm(nn.Linear(32, 64)),
        nn.Tanh(),
        nn.utils.spectral_norm(nn.Linear(64, 4)),
    ).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for config in (balf.BALFConfig(0.5), balf.EnergyConfig(0.9, activation_aware=False)):
        balf.compress(model, torch.randn(64, 32), config, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.training


@pytest.mark.parametrize("frozen", ["all", "bias"])
def test_frozen_layers_stay_frozen(frozen):
    model = _wide().eval()
    for name, p in model.named_parameters():
        if frozen == "all" or name.endswith("bias"):
            p.requires_grad_(False)
    small, report = balf.compress(
        model, torch.randn(64, 256), balf.RankRatioConfig(0.25), progress=False
    )
    assert all(r.factorized for r in report.layers.values())
    for name, p in small.named_parameters():
        assert p.requires_grad == (frozen == "bias" and not name.endswith("bias")), name


class _Blocks(nn.Module):
    """A chain of blocks (for block by block) whose first layer has a parametrized weight."""

    def __init__(self):
        super().__init__()
        self.stem = nn.utils.parametrizations.spectral_norm(nn.Linear(32, 48))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Linear(48, 48)), nn.Tanh())
            for _ in range(2)
        )
        self.head = nn.Linear(48, 4)

    def forward(self, x):
        x = torch.tanh(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return self.head(x)


@pytest.mark.parametrize("strategy", ["whole-model", "block-by-block"])
def test_spectral_norm_parametrizations_of_a_train_mode_model_are_unchanged(strategy):
    """``torch.nn.utils.parametrizations.spectral_norm`` runs a power-iteration step at every
    read of the weight in train mode: balf's reads must not advance the caller's ``_u``/``_v``."""
    model = _Blocks().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs = {"strategy": balf.BlockByBlock()} if strategy == "block-by-block" else {}
    for config in (balf.BALFConfig(0.5), balf.UniformConfig(0.5, activation_aware=False)):
        small, report = balf.compress(model, torch.randn(64, 32), config, progress=False, **kwargs)
        assert any(report.layers[n].factorized for n in ("stem", "blocks.0.0", "blocks.1.0"))
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == [] and model.training
