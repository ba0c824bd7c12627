"""Hooks on a factorized layer (issue 24 item 3): kept on the replacement, statistics unaffected.

The old code dropped a layer's forward hooks and pre-hooks from the result (after collecting the
statistics through them): at an exact rank the output error went from 2e-7 to 0.9.
"""

import pytest
import torch
from torch import nn

import balf


def _exact_rank_model(rank: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    first = nn.Linear(32, 32)
    with torch.no_grad():
        first.weight.copy_(torch.randn(32, rank) @ torch.randn(rank, 32) / 8)
    return nn.Sequential(first, nn.Tanh(), nn.Linear(32, 5)).eval()


def _add_hooks(layer: nn.Module) -> None:
    layer.register_forward_pre_hook(lambda m, args: (args[0] + 1.0,))
    layer.register_forward_hook(lambda m, args, out: out * 2.0)
    layer.register_forward_hook(lambda m, args, kwargs, out: out - 0.5, with_kwargs=True)


@pytest.mark.parametrize("side", ["input", "output"])
def test_forward_hooks_and_pre_hooks_are_kept_on_the_replacement(side):
    model = _exact_rank_model()
    _add_hooks(model[0])
    x = torch.randn(256, 32)
    small, report = balf.compress(
        model, x, balf.EnergyConfig(1 - 1e-6), layers=["0"], side=side, progress=False
    )
    assert report.layers["0"].factorized and report.layers["0"].rank == 4
    with torch.no_grad():
        err = (small(x) - model(x)).abs().max().item()
    assert err < 1e-4, err
    assert len(small[0]._forward_hooks) == 2 and len(small[0]._forward_pre_hooks) == 1


def test_inplace_compression_keeps_hooks_too():
    model = _exact_rank_model()
    _add_hooks(model[0])
    x = torch.randn(256, 32)
    with torch.no_grad():
        expected = model(x)
    small, report = balf.compress(
        model, x, balf.EnergyConfig(1 - 1e-6), layers=["0"], inplace=True, progress=False
    )
    assert report.layers["0"].rank == 4
    with torch.no_grad():
        assert torch.allclose(small(x), expected, atol=1e-4)


def test_backward_hooks_are_kept():
    model = _exact_rank_model()
    seen = []
    model[0].register_full_backward_hook(lambda m, gin, gout: seen.append(gout[0].shape))
    x = torch.randn(64, 32)
    small, report = balf.compress(
        model, x, balf.EnergyConfig(1 - 1e-6), layers=["0"], progress=False
    )
    assert report.layers["0"].factorized
    small(x.requires_grad_()).sum().backward()
    assert seen == [(64, 32)]


def test_spectral_norm_hook_is_baked_into_the_factors_not_carried_over():
    torch.manual_seed(0)
    model = nn.Sequential(nn.utils.spectral_norm(nn.Linear(32, 32)), nn.Tanh(), nn.Linear(32, 5))
    model.eval()
    x = torch.randn(128, 32)
    small, report = balf.compress(model, x, balf.EnergyConfig(0.5), layers=["0"], progress=False)
    assert report.layers["0"].factorized
    assert not small[0]._forward_pre_hooks  # the SpectralNorm hook needs weight_orig
    small.train()
    small(x)  # runs in train mode without the dense layer's reparametrisation
