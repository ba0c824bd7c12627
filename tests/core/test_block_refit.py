"""Block by block with the anchored refit (BlockByBlock(refit=AnchoredRefit(...))): β = 0 without
ridge is today's block by block, blocks whose inputs carry no propagated error give whole-model
BALF for every β, β = 1 brings the compressed model closer to the dense one, the first block's
dense side is the original model's, the rows guard keeps today's fit and says so, one block of
paired statistics at a time, and the report and the strategy's dict record the refit."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import balf
import balf.pipeline.block_refit as block_refit
from balf.errors import BALFError
from balf.refit import AnchoredRefit, CrossStatistics, anchored_decomposition


class Block(nn.Module):
    """A residual MLP block taking a keyword argument (as a decoder layer takes its mask)."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.up, self.down, self.proj = nn.Linear(d, hidden), nn.Linear(hidden, d), nn.Linear(d, d)

    def forward(self, x, scale=None):
        h = x + self.down(torch.relu(self.up(x)))
        h = h + self.proj(torch.tanh(h))
        return h * scale if scale is not None else h


class Chain(nn.Module):
    def __init__(self, d=12, hidden=24, n=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Linear(6, d)
        self.layers = nn.ModuleList(Block(d, hidden) for _ in range(n))
        self.head = nn.Linear(d, 5)

    def forward(self, x, scale=None):
        h = self.stem(x)
        for layer in self.layers:
            h = layer(h, scale=scale)
        return self.head(h)


class ConvChain(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1)
        stage = lambda: nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU(), nn.Conv2d(8, 8, 1))  # noqa: E731
        self.stages = nn.Sequential(*(stage() for _ in range(3)))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.stages(torch.relu(self.conv1(x))).mean((2, 3)))


def _data(n_batches=3, batch=4, tokens=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, tokens, 6, generator=g) for _ in range(n_batches)]


def _refit(beta, ridge=0.0, **kwargs):
    return balf.BlockByBlock(refit=AnchoredRefit(beta=beta, ridge=ridge, **kwargs))


def _compress(model, data, config, strategy, **kwargs):
    return balf.compress(model, data, config, progress=False, strategy=strategy, **kwargs)


def _outputs(model, data, forward=None):
    with torch.no_grad():
        return [forward(model, x) if forward else model(x) for x in data]


def _assert_same_outputs(a, b, data, **tolerance):
    for ya, yb in zip(_outputs(a, data), _outputs(b, data), strict=True):
        torch.testing.assert_close(ya, yb, **tolerance)


def _effective(module):
    """The dense weight a (possibly factorized) Linear applies, ``(out, in)``."""
    if isinstance(module, balf.LowRankLinear):
        return module.second.weight @ module.first.weight
    return module.weight


CASES = {
    "mlp-params": (Chain, _data, balf.BALFConfig(0.4, metric="params"), {}),
    "mlp-uniform": (Chain, _data, balf.UniformConfig(0.4), {}),  # the stem is factorized too
    "conv-flops": (ConvChain, lambda: [torch.randn(4, 3, 8, 8) for _ in range(3)],
                   balf.BALFConfig(0.5), {"blocks": ["stages.0", "stages.1", "stages.2"]}),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_beta_zero_without_ridge_is_todays_block_by_block(case):
    make, data_of, config, kwargs = CASES[case]
    model, data = make(), data_of()
    today, rt = _compress(model, data, config, balf.BlockByBlock(**kwargs))
    refit = balf.BlockByBlock(**kwargs, refit=AnchoredRefit(beta=0.0, ridge=0.0))
    small, rs = _compress(model, data, config, refit)
    assert rs.ranks == rt.ranks
    assert sum(o["refit"] for o in rs.strategy["layers"].values()) >= 3
    _assert_same_outputs(small, today, data, rtol=1e-4, atol=1e-5)
    for name, entry in rs.layers.items():
        assert entry.energy_kept == pytest.approx(rt.layers[name].energy_kept, abs=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_blocks_without_propagated_error_give_whole_model_balf_for_every_beta(beta):
    """Only the last block's layers are factorized: its inputs are the dense model's (X' = X)."""
    model, data = Chain(), _data()
    config, layers = balf.BALFConfig(0.4, metric="params"), ["layers.2.*"]
    whole, rw = balf.compress(model, data, config, layers=layers, progress=False)
    small, rs = _compress(model, data, config, _refit(beta), layers=layers)
    assert rs.ranks == rw.ranks and any(e.factorized for e in rs.layers.values())
    assert all(o["refit"] for o in rs.strategy["layers"].values())
    _assert_same_outputs(small, whole, data, rtol=1e-4, atol=1e-5)
    for name, entry in rs.layers.items():
        assert entry.energy_kept == pytest.approx(rw.layers[name].energy_kept, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_anchored_blocks_are_closer_to_the_dense_model_on_the_calibration_data(seed):
    model, data = Chain(n=4, seed=seed), _data(n_batches=4, batch=8, seed=seed)
    config = balf.BALFConfig(0.4, metric="params")
    errors = {}
    for beta in (0.0, 1.0):
        small, _ = _compress(model, data, config, _refit(beta, ridge=1e-6))
        pairs = zip(_outputs(small, data), _outputs(model, data), strict=True)
        errors[beta] = sum(float((a - b).square().sum()) for a, b in pairs)
    assert errors[1.0] < errors[0.0]


def _inputs_of(model, name, data):
    seen = []
    handle = model.get_submodule(name).register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    _outputs(model, data)
    handle.remove()
    return torch.cat([x.reshape(-1, x.shape[-1]) for x in seen])


def test_the_first_blocks_dense_side_is_the_original_model():
    """With the stem factorized, block 0's layer is refitted from X' (the compressed stem's
    outputs) and X (the original model's): the anchored fit computed by hand."""
    model, data, config = Chain(), _data(), balf.UniformConfig(0.4)
    refit = AnchoredRefit(beta=1.0, ridge=1e-3)
    small, report = _compress(model, data, config, balf.BlockByBlock(refit=refit))
    assert report.layers["stem"].factorized
    assert "before the first block" in report.layers["stem"].note
    assert not report.strategy["layers"]["stem"]["refit"]
    partial = Chain()
    partial.stem = small.stem
    x, xp = _inputs_of(model, "layers.0.up", data), _inputs_of(partial, "layers.0.up", data)
    assert not torch.allclose(x, xp)
    stats = CrossStatistics.zeros(1, 12, torch.device("cpu"))
    stats.add(xp[None], x[None])
    w = model.layers[0].up.weight.T[None]
    rank = report.ranks["layers.0.up"]
    a, b = anchored_decomposition(w, stats, 1.0, 1e-3, 12).factors(w, rank)
    torch.testing.assert_close(_effective(small.layers[0].up), (a @ b)[0].T.float())
    assert "after the last block" in report.layers["head"].note


def test_rows_guard_keeps_todays_fit_and_says_so():
    model, data = Chain(), _data(n_batches=1, batch=4, tokens=5)  # 20 rows; `down` has 24 inputs
    config = balf.BALFConfig(0.4, metric="params")
    today, _ = _compress(model, data, config, balf.BlockByBlock(), layers=["layers.*"])
    small, report = _compress(model, data, config, balf.BlockByBlock(refit=AnchoredRefit()),
                              layers=["layers.*"])  # fmt: skip
    outcome = report.strategy["layers"]
    assert outcome["layers.0.up"]["refit"] and outcome["layers.0.up"]["rows"] == 20
    assert not outcome["layers.0.down"]["refit"]
    assert "20 calibration rows do not determine a fit of 24 inputs" in (
        report.layers["layers.0.down"].note
    )
    # block 0's inputs are the dense ones: today's fit there is the same layer
    torch.testing.assert_close(
        _effective(small.layers[0].down), _effective(today.layers[0].down), rtol=1e-4, atol=1e-5
    )


def test_bias_correction_shifts_each_bias_by_the_reported_amount():
    model, data, config = Chain(), _data(), balf.BALFConfig(0.4, metric="params")
    plain, _ = _compress(model, data, config, _refit(1.0, 1e-3))
    shifted, report = _compress(model, data, config, _refit(1.0, 1e-3, bias_correction=True))
    shifts = {n: o["bias_shift"] for n, o in report.strategy["layers"].items() if o["refit"]}
    assert shifts and all(s is not None for s in shifts.values())
    # block 0 is fitted on the same statistics in both: only the bias moved, by the shift
    name = "layers.0.up"
    assert report.layers[name].factorized
    moved = shifted.get_submodule(name).second.bias - plain.get_submodule(name).second.bias
    assert float(moved.detach().norm()) == pytest.approx(shifts[name], rel=1e-4, abs=1e-6)


def test_one_block_of_paired_statistics_at_a_time(monkeypatch):
    alive, peak = [0], [0]

    class Counting(block_refit.CrossAccumulator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])

        def __del__(self):
            alive[0] -= 1

    monkeypatch.setattr(block_refit, "CrossAccumulator", Counting)
    _compress(Chain(n=4), _data(), balf.BALFConfig(0.5), _refit(1.0))
    assert peak[0] == 3  # one block's three layers


class Reshuffled:
    """Re-iterable data that gives its batches in another order each time."""

    def __init__(self, batches):
        self.batches, self.calls = batches, 0

    def __iter__(self):
        self.calls += 1
        return iter(self.batches[self.calls % len(self.batches):]
                    + self.batches[: self.calls % len(self.batches)])  # fmt: skip


def test_data_that_changes_between_passes_is_refused():
    """The dense inputs of block 0 are captured in their own pass when the stem is factorized."""
    with pytest.raises(BALFError, match="shuffle=False"):
        _compress(Chain(), Reshuffled(_data()), balf.UniformConfig(0.4), _refit(1.0))


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.up = nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x):
        h = self.fc(x)
        y = self.up(h)
        h.mul_(2.0)  # `up`'s input, changed after `up` ran
        return h + y


def test_an_input_modified_in_place_is_refused():
    torch.manual_seed(0)
    model = nn.Sequential(*(InPlace() for _ in range(2))).eval()
    data = [torch.randn(8, 6) for _ in range(2)]
    with pytest.raises(BALFError, match="modified in place"):
        _compress(model, data, balf.BALFConfig(0.5, metric="params"), _refit(1.0))


def test_the_report_and_the_strategys_dict_record_the_refit():
    refit = AnchoredRefit(beta=0.7, ridge=1e-4, bias_correction=True, min_rows_per_input=2.0)
    strategy = balf.BlockByBlock(blocks=["a", "b"], refit=refit)
    described = json.loads(json.dumps(strategy.to_dict()))
    assert described["refit"] == refit.to_dict()
    assert balf.BlockByBlock.from_dict(described) == strategy
    assert "refit" not in balf.BlockByBlock().to_dict()  # the default's dict is unchanged
    assert balf.BlockByBlock.from_dict(balf.BlockByBlock().to_dict()) == balf.BlockByBlock()
    _, report = _compress(Chain(), _data(), balf.BALFConfig(0.5), _refit(0.5))
    assert report.strategy["refit"] == AnchoredRefit(beta=0.5, ridge=0.0).to_dict()
    assert set(report.strategy["layers"]) >= {"layers.0.up", "layers.2.proj"}
    assert balf.BlockByBlock.from_dict(report.strategy).refit == AnchoredRefit(0.5, 0.0)
    with pytest.raises(BALFError, match="AnchoredRefit"):
        balf.BlockByBlock(refit={"beta": 1.0})
    with pytest.raises(BALFError, match="AnchoredRefit description"):
        balf.BlockByBlock.from_dict({"type": "BlockByBlock", "refit": {"type": "Other"}})


transformers = pytest.importorskip("transformers", reason="transformers is not installed")


def _tiny(kind: str):
    from _hf_models import tiny_gpt2_config, tiny_llama_config

    torch.manual_seed(0)
    if kind == "gpt2":  # Conv1D projections
        return transformers.GPT2LMHeadModel(tiny_gpt2_config()).eval(), "transformer.h.1.mlp.c_fc"
    config = tiny_llama_config(intermediate_size=48, num_hidden_layers=3)
    return transformers.LlamaForCausalLM(config).eval(), "model.layers.2.mlp.down_proj"


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_tiny_hf_models_compress_with_the_refit_and_run(kind):
    """Padded batches (padding left out of the paired statistics); β = 0 without ridge is
    today's block by block there too, and β = 1 runs."""
    (model, refitted), g = _tiny(kind), torch.Generator().manual_seed(0)
    data = []
    for _ in range(3):
        mask = torch.ones(2, 16, dtype=torch.long)
        mask[1, 11:] = 0
        data.append({"input_ids": torch.randint(0, 64, (2, 16), generator=g),
                     "attention_mask": mask})  # fmt: skip

    def forward(m, b):
        return m(**b, use_cache=False).logits

    config = balf.BALFConfig(0.5, metric="params")
    today, rt = _compress(model, data, config, balf.BlockByBlock(), forward=forward)
    zero, rz = _compress(model, data, config, _refit(0.0), forward=forward)
    one, ro = _compress(model, data, config, _refit(1.0, 1e-3), forward=forward)
    assert rz.ranks == rt.ranks == ro.ranks
    assert ro.strategy["layers"][refitted]["refit"]
    for batch, a, b, c in zip(data, _outputs(zero, data, forward), _outputs(today, data, forward),
                              _outputs(one, data, forward), strict=True):  # fmt: skip
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(a[real], b[real], rtol=1e-3, atol=1e-4)
        assert torch.isfinite(c).all()
