"""``compress``, ``Compressor``, ``collect_statistics`` and ``count_flops`` leave the caller's model
exactly as they found it: every module's ``training`` flag (also a mixed state, e.g. a frozen
BatchNorm inside a model in train mode), every parameter and buffer (BatchNorm running statistics
included), ``requires_grad`` and ``.grad``, hooks, the module tree, and the grad mode. The
compressed copy shares no storage with the input, so editing it cannot edit the input.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import balf


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1),
        nn.BatchNorm2d(12),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Conv2d(12, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 24),
        nn.ReLU(),
        nn.Linear(24, 10),
    )
    model.train()
    model[5].eval()  # a frozen BatchNorm, as when fine-tuning: mixed training flags
    model[0].weight.requires_grad_(False)  # a frozen layer
    model(torch.randn(4, 3, 8, 8)).sum().backward()  # gradients present; BN stats updated
    model.register_forward_hook(lambda *_: None)
    return model


def _snapshot(model: nn.Module) -> dict:
    """Everything about ``model`` that a caller could observe."""
    return {
        "modules": [(name, id(m), type(m)) for name, m in model.named_modules()],
        "training": {name: m.training for name, m in model.named_modules()},
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "hooks": {
            name: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for name, m in model.named_modules()
        },
    }


def _assert_unchanged(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after["modules"] == before["modules"]
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["hooks"] == before["hooks"]
    assert after["state"].keys() == before["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    for name, grad in before["grads"].items():
        now = after["grads"][name]
        assert (now is None) == (grad is None), name
        assert grad is None or torch.equal(now, grad), name
    assert torch.is_grad_enabled()


X = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))

CALLS = {
    "compress-balf": lambda m: balf.compress(m, X, balf.BALFConfig(0.5), progress=False),
    "compress-data-free": lambda m: balf.compress(
        m, None, balf.UniformConfig(0.5, activation_aware=False), progress=False
    ),
    "compress-statistics": lambda m: balf.compress(
        m, balf.collect_statistics(m, X, progress=False), balf.EnergyConfig(0.9), progress=False
    ),
    "compressor-several-configs": lambda m: [
        c.compress(cfg)
        for c in [balf.Compressor(m, list(X.split([10, 6])), progress=False)]
        for cfg in (balf.BALFConfig(0.4), balf.BALFConfig(0.7, metric="params"))
    ],
    "collect-statistics": lambda m: balf.collect_statistics(m, X, progress=False),
    "count-flops": lambda m: balf.count_flops(m, X[:1]),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_the_input_model_is_left_as_it_was_found(call):
    model = _model()
    before = _snapshot(model)
    CALLS[call](model)
    _assert_unchanged(model, before)


@pytest.mark.parametrize("call", ["compress-balf", "count-flops"])
def test_the_input_model_is_left_as_it_was_found_after_an_error(call):
    model = _model()
    before = _snapshot(model)
    broken = X.clone()
    broken[0, 0, 0, 0] = float("nan")
    # calibration fails on NaN statistics, FLOP counting on an input of the wrong shape
    data = broken if call == "compress-balf" else torch.randn(1, 5, 8, 8)
    with pytest.raises((balf.BALFError, RuntimeError)):
        if call == "compress-balf":
            balf.compress(model, data, balf.BALFConfig(0.5), progress=False)
        else:
            balf.count_flops(model, data)
    _assert_unchanged(model, before)


@pytest.mark.parametrize(
    "config",
    [balf.BALFConfig(0.5), balf.EnergyConfig(1.0)],  # the second keeps every layer dense
    ids=["some-layers-factorized", "all-layers-kept-dense"],
)
def test_the_compressed_copy_shares_no_storage_with_the_input(config):
    model = _model()
    before = _snapshot(model)
    small, _ = balf.compress(model, X, config, progress=False)
    ours = {t.untyped_storage().data_ptr() for t in model.state_dict().values() if t.numel()}
    theirs = {t.untyped_storage().data_ptr() for t in small.state_dict().values() if t.numel()}
    assert not ours & theirs
    with torch.no_grad():  # editing the copy cannot edit the input
        for t in small.state_dict().values():
            if t.is_floating_point():
                t.add_(1)
    _assert_unchanged(model, before)


# -- in place: a failure half way puts the caller's model back -----------------------------------


class _PadsInForward(nn.Conv2d):
    """A conv that pads in its own forward; registered below as a plain conv (wrongly), so its
    replacement fails the documented per-layer shape check."""

    def forward(self, x):
        return super().forward(nn.functional.pad(x, [0, 1, 0, 1]))


def _misread_model() -> nn.Module:
    from balf.layers.conv2d import Conv2dKind

    balf.register_layer_kind(Conv2dKind().for_type(_PadsInForward))
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), _PadsInForward(12, 16, 3, stride=2),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()  # fmt: skip


def test_a_failed_inplace_compression_restores_the_model_and_says_so():
    """The shape check of the third layer fails after the first one was installed in the
    caller's model: the model is put back, the error says so, and the compressor can retry
    (it refused: "compressed in place; make a new one")."""
    model = _misread_model()
    before = _snapshot(model)
    compressor = balf.Compressor(model, X, progress=False)
    for _ in range(2):
        with pytest.raises(balf.BALFError, match="outputs shape") as caught:
            compressor.compress(balf.RankRatioConfig(0.3), inplace=True)
        _assert_unchanged(model, before)
        assert "the model was restored" in "".join(caught.value.__notes__)
        assert "1 layer(s) already replaced (0)" in "".join(caught.value.__notes__)


class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(x)))


def test_an_interrupt_during_block_by_block_inplace_restores_the_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Sequential(*(_Block(8) for _ in range(3))))
    model.eval()
    data = [torch.randn(4, 5, 4) for _ in range(3)]
    strategy = balf.BlockByBlock(blocks=["1.0", "1.1", "1.2"])
    compressor = balf.Compressor(model, data, progress=False, strategy=strategy)

    def interrupt(module, args):  # Ctrl-C once blocks 0 and 1 are installed
        if isinstance(model[1][1].down, balf.LowRankLinear):
            raise KeyboardInterrupt

    reference = model(data[0])
    handle = model[1][2].register_forward_pre_hook(interrupt)
    before = _snapshot(model)
    with pytest.raises(KeyboardInterrupt) as caught:
        compressor.compress(balf.BALFConfig(0.5, metric="params"), inplace=True)
    _assert_unchanged(model, before)
    note = "".join(caught.value.__notes__)
    assert "4 layer(s) already replaced (1.0.up, 1.0.down, 1.1.up, 1.1.down)" in note
    handle.remove()
    torch.testing.assert_close(model(data[0]), reference)
    small, report = compressor.compress(balf.BALFConfig(0.5, metric="params"), inplace=True)
    assert small is model and any(lr.factorized for lr in report.layers.values())
