"""Block-by-block calibration (balf.BlockByBlock): same ranks and budget as whole-model calibration,
the first block's factors equal, later blocks calibrated on propagated inputs, one block's
statistics alive at a time, clear errors for what it cannot do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import balf
import balf.calibration.layer_pass as layer_pass
import balf.pipeline.block_runner as bbb
from balf.errors import BALFError


class Block(nn.Module):
    """A residual MLP block taking a keyword argument (as a decoder layer takes its mask)."""

    def __init__(self, d: int, hidden: int, tuple_output: bool = False) -> None:
        super().__init__()
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d)
        self.proj = nn.Linear(d, d)
        self.tuple_output = tuple_output

    def forward(self, x, scale=None):
        h = x + self.down(torch.relu(self.up(x)))
        h = h + self.proj(h)
        if scale is not None:
            h = h * scale
        return (h,) if self.tuple_output else h


class Chain(nn.Module):
    def __init__(self, d=12, hidden=24, n=3, tuple_output=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Linear(6, d)
        self.layers = nn.ModuleList(Block(d, hidden, tuple_output) for _ in range(n))
        self.head = nn.Linear(d, 5)

    def forward(self, x, scale=None):
        h = self.stem(x)
        for layer in self.layers:
            out = layer(h, scale=scale)
            h = out[0] if isinstance(out, tuple) else out
        return self.head(h)


def _data(n_batches=3, batch=4, tokens=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, tokens, 6, generator=g) for _ in range(n_batches)]


CONFIGS = {
    "params_auto": balf.BALFConfig(0.5, metric="params"),
    "flops_auto": balf.BALFConfig(0.6, metric="flops"),
    "uniform_act_aware": balf.UniformConfig(0.5),
    "energy_act_aware": balf.EnergyConfig(0.9),
}


def _both(model, data, config, **kwargs):
    whole, rw = balf.compress(model, data, config, progress=False, **kwargs)
    block, rb = balf.compress(
        model, data, config, progress=False, strategy=balf.BlockByBlock(), **kwargs
    )
    return whole, rw, block, rb


@pytest.mark.parametrize("mode", CONFIGS, ids=list(CONFIGS))
def test_same_ranks_and_budget_as_whole_model(mode):
    model, data, config = Chain(), _data(), CONFIGS[mode]
    whole, rw, block, rb = _both(model, data, config)
    assert rb.ranks == rw.ranks
    assert any(lr.factorized for lr in rb.layers.values())
    assert rb.layer_params_ratio == pytest.approx(rw.layer_params_ratio)
    if rb.budget is not None:
        assert rb.achieved <= rb.budget
    if mode == "params_auto":
        assert rb.layer_params_ratio <= 0.5 + 1e-12
    assert rb.strategy["blocks"] == ["layers.0", "layers.1", "layers.2"]


def _effective(module):
    """The dense weight a (possibly factorized) Linear applies, ``(out, in)``."""
    if isinstance(module, balf.LowRankLinear):
        return module.second.weight @ module.first.weight
    return module.weight


def test_first_block_equals_whole_model_later_blocks_propagate():
    model, data = Chain(), _data()
    whole, rw, block, rb = _both(model, data, balf.BALFConfig(0.4, metric="params"))
    for name in ("stem", "layers.0.up", "layers.0.down", "layers.0.proj"):
        torch.testing.assert_close(
            _effective(block.get_submodule(name)), _effective(whole.get_submodule(name))
        )
        assert rb.layers[name].energy_kept == pytest.approx(rw.layers[name].energy_kept)
    later = [n for n in rb.layers if n.startswith("layers.2") and rb.layers[n].factorized]
    assert later
    assert any(
        not torch.allclose(_effective(block.get_submodule(n)), _effective(whole.get_submodule(n)))
        for n in later
    )


def test_later_blocks_are_calibrated_on_the_compressed_blocks_outputs():
    """A layer of block 2 keeps the energy its statistics give on a model whose blocks 0 and 1
    are the compressed ones (and not what the original model's statistics give)."""
    import copy

    model, data = Chain(), _data()
    whole, rw, block, rb = _both(model, data, balf.BALFConfig(0.4, metric="params"))
    probe = copy.deepcopy(model)
    probe.layers[0], probe.layers[1] = block.layers[0], block.layers[1]
    names = ["layers.2.up", "layers.2.down", "layers.2.proj"]
    stats = balf.collect_statistics(probe, data, names, progress=False)
    differs = False
    for name in names:
        dec = balf.decompose_layer(probe.get_submodule(name), stats.layers[name])
        kept = float(dec.energies()[rb.layers[name].rank - 1])
        assert rb.layers[name].energy_kept == pytest.approx(kept, rel=1e-9, abs=1e-12)
        differs |= abs(kept - rw.layers[name].energy_kept) > 1e-6
    assert differs


def _low_rank_chain(rank=2):
    model = Chain(d=12, hidden=24)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                out_f, in_f = m.weight.shape
                m.weight.copy_(torch.randn(out_f, rank) @ torch.randn(rank, in_f) / in_f)
    return model


@pytest.mark.parametrize(
    "config",
    [balf.UniformConfig(0.45), balf.BALFConfig(0.5, metric="params")],
    ids=["uniform", "params_auto"],
)
def test_exact_ranks_give_the_whole_model_result(config):
    """Weights of rank 2: every factorization at rank ≥ 2 is exact, so the propagated inputs are
    the original ones and block by block equals whole-model calibration (and the model)."""
    model, data = _low_rank_chain(), _data()
    whole, rw, block, rb = _both(model, data, config)
    assert rb.ranks == rw.ranks
    assert all(rb.layers[n].rank >= 2 for n in rb.layers)
    assert sum(lr.factorized for lr in rb.layers.values()) >= 5
    with torch.no_grad():
        for x in data:
            torch.testing.assert_close(block(x), whole(x), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(block(x), model(x), rtol=1e-4, atol=1e-5)
    for name in rb.layers:
        assert rb.layers[name].energy_kept == pytest.approx(rw.layers[name].energy_kept, abs=1e-6)


def test_one_block_of_statistics_at_a_time(monkeypatch):
    alive, peak = [0], [0]

    class Counting(layer_pass.GramAccumulator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])

        def __del__(self):
            alive[0] -= 1

    monkeypatch.setattr(layer_pass, "GramAccumulator", Counting)
    model = Chain(n=4)
    balf.compress(
        model, _data(), balf.BALFConfig(0.5), progress=False, strategy=balf.BlockByBlock()
    )
    assert peak[0] == 3  # one block's three layers (not 4·3 + 2)


class _Counts:
    """Which layers' statistics each hooked pass collects, and how often each layer is decomposed
    (:func:`decompose_layer`) or only has its energies computed (:func:`layer_energies`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.passes: list[tuple[str, ...]] = []
        self.decomposed: dict[str, int] = {}
        self.energies_only: dict[str, int] = {}
        hooked_pass, decompose, energies = bbb.hooked_pass, bbb.decompose_layer, bbb.layer_energies
        names: dict[int, str] = {}

        def counting_pass(modules, *args, **kwargs):
            self.passes.append(tuple(modules))
            names.update({id(m): n for n, m in modules.items()})
            return hooked_pass(modules, *args, **kwargs)

        def counting(counts, function):
            def call(module, *args, **kwargs):
                name = names[id(module)]
                counts[name] = counts.get(name, 0) + 1
                return function(module, *args, **kwargs)

            return call

        monkeypatch.setattr(bbb, "hooked_pass", counting_pass)
        monkeypatch.setattr(bbb, "decompose_layer", counting(self.decomposed, decompose))
        monkeypatch.setattr(bbb, "layer_energies", counting(self.energies_only, energies))

    def passes_over(self, name: str) -> int:
        return sum(name in p for p in self.passes)


def _assert_same_compression(a, ra, b, rb, data):
    assert ra.ranks == rb.ranks
    for name, entry in ra.layers.items():
        assert entry.energy_kept == rb.layers[name].energy_kept, name
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key, value in sa.items():
        assert torch.equal(value, sb[key]), key
    with torch.no_grad():
        for x in data:
            assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_the_first_block_is_calibrated_once_when_nothing_before_it_is_replaced(
    monkeypatch, inplace
):
    """Nothing before the first block is replaced: the propagation pass installs the first block's
    decompositions from the allocation pass (its inputs are the same) — a bit-identical model,
    the block's statistics collected once, and every layer decomposed exactly once (the other
    layers of the allocation pass need only their energies)."""
    data, config, layers = _data(), balf.BALFConfig(0.4, metric="params"), ["layers.*", "head"]
    first = ["layers.0.up", "layers.0.down", "layers.0.proj"]

    def run():
        model = Chain()
        return balf.compress(model, data, config, layers, inplace, progress=False,
                             strategy=balf.BlockByBlock())  # fmt: skip

    monkeypatch.setattr(bbb.BlockRunner, "_reuse_first_block", False)
    reference, rr = run()
    monkeypatch.setattr(bbb.BlockRunner, "_reuse_first_block", True)
    counts = _Counts(monkeypatch)
    small, rs = run()
    assert any(rs.layers[n].factorized for n in first)
    _assert_same_compression(small, rs, reference, rr, data)
    assert all(counts.passes_over(n) == 1 for n in first)
    assert counts.passes_over("layers.1.up") == 2  # allocation and propagation
    assert counts.decomposed == dict.fromkeys(rs.layers, 1)
    later = [n for n in rs.layers if n not in first]
    assert counts.energies_only == dict.fromkeys(later, 1)  # the allocation pass
    assert {"allocation_pass", "propagation_pass"} <= rs.timings.keys()


def test_the_first_blocks_kept_decompositions_are_freed_after_one_use(monkeypatch):
    """They are freed once the first block is installed (not held through the later, larger
    installations); a second compression by the same compressor recalibrates the block and gives
    what a compressor without the reuse gives."""
    data, layers = _data(), ["layers.*", "head"]
    configs = balf.BALFConfig(0.6, metric="params"), balf.BALFConfig(0.4, metric="params")

    def compressor():
        return balf.Compressor(Chain(), data, layers, progress=False, strategy=balf.BlockByBlock())

    monkeypatch.setattr(bbb.BlockRunner, "_reuse_first_block", False)
    reference = compressor()
    expected = [reference.compress(c) for c in configs]
    monkeypatch.setattr(bbb.BlockRunner, "_reuse_first_block", True)
    counts = _Counts(monkeypatch)
    reusing = compressor()
    runner = reusing._runner(True)
    first, rf = reusing.compress(configs[0])
    assert runner._first_block == {}
    assert counts.passes_over("layers.0.up") == 1
    second, rs = reusing.compress(configs[1])
    assert counts.passes_over("layers.0.up") == 2
    _assert_same_compression(first, rf, *expected[0], data)
    _assert_same_compression(second, rs, *expected[1], data)


def test_a_replaced_layer_before_the_first_block_recalibrates_it(monkeypatch):
    """The stem is factorized: the first block's inputs change, so its statistics are collected
    again on the propagated inputs (as without the reuse)."""
    data, config = _data(), balf.UniformConfig(0.4)

    def run():
        return balf.compress(Chain(), data, config, progress=False, strategy=balf.BlockByBlock())

    monkeypatch.setattr(bbb.BlockRunner, "_reuse_first_block", False)
    reference, rr = run()
    monkeypatch.setattr(bbb.BlockRunner, "_reuse_first_block", True)
    counts = _Counts(monkeypatch)
    small, rs = run()
    assert rs.layers["stem"].factorized
    _assert_same_compression(small, rs, reference, rr, data)
    assert counts.passes_over("layers.0.up") == 2
    assert counts.decomposed["layers.0.up"] == 2  # kept in the allocation pass, not used


def test_the_refit_keeps_no_first_block_decompositions(monkeypatch):
    """The refit fits the first block on paired statistics: the allocation pass keeps none of its
    decompositions (energies only) and the propagation pass collects them again."""
    from balf.refit import AnchoredRefit

    counts = _Counts(monkeypatch)
    strategy = balf.BlockByBlock(refit=AnchoredRefit(beta=0.5))
    balf.compress(Chain(), _data(), balf.BALFConfig(0.4, metric="params"), ["layers.*"],
                  progress=False, strategy=strategy)  # fmt: skip
    assert counts.passes_over("layers.0.up") == 2
    assert "layers.0.up" not in counts.decomposed
    assert counts.energies_only["layers.0.up"] == 1


def test_keyword_arguments_and_tuple_outputs_are_carried():
    model = Chain(tuple_output=True)
    scale = torch.tensor(0.5)
    data = [((x,), {"scale": scale}) for x in _data()]
    whole, rw, block, rb = _both(model, data, balf.BALFConfig(0.5, metric="params"))
    assert rb.ranks == rw.ranks
    first = "layers.0.up"
    torch.testing.assert_close(
        _effective(block.get_submodule(first)), _effective(whole.get_submodule(first))
    )


def test_mapping_batches_through_forward():
    model = Chain()
    data = [{"x": x} for x in _data()]
    whole, rw, block, rb = _both(model, data, balf.BALFConfig(0.5), forward=lambda m, b: m(**b))
    assert rb.ranks == rw.ranks
    assert rb.model_flops_ratio == pytest.approx(rw.model_flops_ratio)


def test_compressor_reuses_the_allocation_pass_and_inplace_works():
    model, data = Chain(), _data()
    compressor = balf.Compressor(model, data, progress=False, strategy=balf.BlockByBlock())
    _, r1 = compressor.compress(balf.BALFConfig(0.7))
    _, r2 = compressor.compress(balf.BALFConfig(0.4))
    assert r1.timings["allocation_pass"] > 0 and r2.timings["allocation_pass"] == 0
    assert r2.layer_flops_ratio <= 0.4 + 1e-12 < r1.layer_flops_ratio
    reference = Chain()
    small, report = balf.compress(
        reference,
        data,
        balf.BALFConfig(0.4),
        progress=False,
        inplace=True,
        strategy=balf.BlockByBlock(),
    )
    assert small is reference and report.ranks == r2.ranks


def _fake_latency_table(model):
    """Seconds proportional to the weight entries (dense) and to ``r·(D + K)`` (low rank)."""
    from balf.layers.selection import resolve_layers
    from balf.ranks.latency import LatencyTable, LayerLatency

    layers = {}
    for name, m in resolve_layers(model)[0].items():
        k, d = m.weight.shape
        ranks = list(range(1, min(d, k) + 1))
        layers[name] = LayerLatency(d * k * 1e-6, ranks, [r * (d + k) * 1e-6 for r in ranks])
    total = sum(v.dense for v in layers.values()) * 1.1
    return LatencyTable(layers, total, {"device": "fake"})


def test_latency_budgets_run_block_by_block():
    """A latency budget is a cost model like any other: block by block takes it (it was refused
    by a string test on the config's metric) and chooses whole-model calibration's ranks."""
    model, data = Chain(), _data()
    config = balf.BALFConfig(0.6, metric="latency")
    table = _fake_latency_table(model)
    whole, rw, block, rb = _both(model, data, config, latency=table)
    assert rb.ranks == rw.ranks and rb.metric == "latency"
    assert rb.achieved <= rb.budget


def test_data_free_configs_are_unchanged():
    model, data = Chain(), _data()
    config = balf.UniformConfig(0.5, activation_aware=False)
    whole, rw, block, rb = _both(model, data, config)
    assert rb.ranks == rw.ranks and rb.strategy is None
    x = data[0]
    torch.testing.assert_close(block(x), whole(x))


class Stage(nn.Sequential):
    def __init__(self, c_in, c_out, stride):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, stride, 1), nn.ReLU(), nn.Conv2d(c_out, c_out, 3, 1, 1)
        )


class TinyResNet(nn.Module):
    """Stages that are not in one container (as torchvision's layer1 … layer4)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1)
        self.layer1 = Stage(8, 8, 1)
        self.layer2 = Stage(8, 16, 2)
        self.layer3 = Stage(16, 16, 2)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(torch.relu(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


def test_cnn_stages_by_name():
    model = TinyResNet()
    data = [torch.randn(4, 3, 16, 16) for _ in range(2)]
    strategy = balf.BlockByBlock(blocks=["layer1", "layer2", "layer3"])
    whole, rw = balf.compress(model, data, balf.BALFConfig(0.5), progress=False)
    block, rb = balf.compress(model, data, balf.BALFConfig(0.5), progress=False, strategy=strategy)
    assert rb.ranks == rw.ranks
    assert rb.layer_flops_ratio <= 0.5 + 1e-12
    torch.testing.assert_close(
        block.layer1[0].first.weight, whole.layer1[0].first.weight
    ) if rb.layers["layer1.0"].factorized else None
    with torch.no_grad():
        assert block(data[0]).shape == (4, 4)


def test_find_blocks_picks_the_container_of_most_weights():
    from balf.layers.selection import resolve_layers

    model = Chain()
    assert bbb.find_blocks(model, resolve_layers(model)[0]) == ["layers.0", "layers.1", "layers.2"]


def test_errors_name_the_problem(tmp_path):
    model, data = Chain(), _data()
    config = balf.BALFConfig(0.5)

    def run(strategy, data=data, **kw):
        return balf.compress(model, data, config, progress=False, strategy=strategy, **kw)

    with pytest.raises(BALFError, match="unknown block"):
        run(balf.BlockByBlock(blocks=["layers.7"]))
    with pytest.raises(BALFError, match="inside block"):
        run(balf.BlockByBlock(blocks=["layers", "layers.0"]))
    with pytest.raises(BALFError, match="in the given order"):
        run(balf.BlockByBlock(blocks=["layers.1", "layers.0"]))
    with pytest.raises(BALFError, match="not the output of block"):
        run(balf.BlockByBlock(blocks=["layers.0", "layers.2"]))
    with pytest.raises(BALFError, match="one-shot iterator"):
        run(balf.BlockByBlock(), data=iter(data))
    stats = balf.collect_statistics(model, data, progress=False)
    with pytest.raises(BALFError, match="needs calibration data"):
        run(balf.BlockByBlock(), data=stats)
    with pytest.raises(BALFError, match="does not use a Cache"):
        run(balf.BlockByBlock(), cache=balf.Cache(tmp_path))
    with pytest.raises(BALFError, match="strategy must be"):
        run("block_by_block")
    with pytest.raises(BALFError, match="string"):
        balf.BlockByBlock(blocks="layers")


def test_strategy_round_trips_to_json():
    import json

    s = balf.BlockByBlock(blocks=["a", "b"])
    d = json.loads(json.dumps(s.to_dict()))
    assert d == {
        "type": "BlockByBlock",
        "blocks": ["a", "b"],
        "activation_device": "cpu",
        "decomposition_device": None,
    }


transformers = pytest.importorskip("transformers", reason="transformers is not installed")


def _tiny_llama():
    from _hf_models import tiny_llama_config

    config = tiny_llama_config(intermediate_size=48, num_hidden_layers=3)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def test_hf_llama_block_by_block():
    model = _tiny_llama()
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": torch.randint(0, 64, (2, 16), generator=g)} for _ in range(3)]

    def forward(m, b):
        return m(**b, use_cache=False)

    whole, rw, block, rb = _both(
        model, data, balf.BALFConfig(0.5, metric="params"), forward=forward
    )
    assert rb.ranks == rw.ranks
    assert rb.strategy["blocks"] == ["model.layers.0", "model.layers.1", "model.layers.2"]
    name = "model.layers.0.mlp.up_proj"
    torch.testing.assert_close(
        _effective(block.get_submodule(name)), _effective(whole.get_submodule(name))
    )
    with torch.no_grad():
        logits = block(**data[0], use_cache=False).logits
    assert torch.isfinite(logits).all()
    with pytest.raises(BALFError, match="use_cache=False"):
        balf.compress(
            model,
            data,
            balf.BALFConfig(0.5),
            progress=False,
            forward=lambda m, b: m(**b, use_cache=True),
            strategy=balf.BlockByBlock(),
        )


class AttentionBlock(nn.Module):
    """A pre-norm encoder block built on nn.MultiheadAttention (packed in_proj_weight)."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        h = x + self.attn(x, x, x, need_weights=False)[0]
        return h + self.fc(torch.relu(h))


def test_attention_projections_and_hooks_block_by_block():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Sequential(*(AttentionBlock() for _ in range(2))))
    model.eval()
    seen = []
    model[1][0].fc.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    data = [torch.randn(4, 5, 6) for _ in range(3)]
    config = balf.BALFConfig(0.6, metric="params")
    whole, rw, block, rb = _both(model, data, config, layers=["1.*"])
    assert rb.ranks == rw.ranks
    factorized = [n for n, lr in rb.layers.items() if lr.factorized]
    assert {"1.0.attn.in_proj", "1.1.attn.in_proj", "1.0.fc"} <= set(factorized), factorized
    x = torch.randn(2, 5, 6)
    assert block(x).shape == model(x).shape
    seen.clear()
    block(x)
    assert seen == [torch.Size([2, 5, 16])]  # the user's hook moved to the factorized layer


# -- real model structures: every block's own arguments, the tail, shared layers ----------------


def _energies(model, data, strategy=None, **kwargs):
    """Every candidate's energy curve: block by block's come from its allocation pass."""
    compressor = balf.Compressor(model, data, progress=False, strategy=strategy, **kwargs)
    return {c.name: c.energies for c in compressor.candidates(True)}


def _assert_same_candidates(model, data, strategy=None, **kwargs):
    """The allocation pass collects exactly the whole-model statistics of every layer."""
    whole = _energies(model, data, **kwargs)
    block = _energies(model, data, strategy or balf.BlockByBlock(), **kwargs)
    assert block.keys() == whole.keys()
    for name, e in whole.items():
        np.testing.assert_allclose(block[name], e, rtol=1e-7, atol=1e-9, err_msg=name)


class SkipsToHead(nn.Module):
    """The head reads every block's output and the stem's (not only the last block's)."""

    def __init__(self, d=6, n=3):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Linear(4, d)
        self.layers = nn.ModuleList(Block(d, 2 * d) for _ in range(n))
        self.head = nn.Linear((n + 1) * d, 9)

    def forward(self, x):
        h = self.stem(x)
        outs = [h]
        for layer in self.layers:
            h = layer(h)
            outs.append(h)
        return self.head(torch.cat(outs, -1))


def test_a_head_reading_earlier_blocks_is_calibrated_on_what_it_reads():
    """The tail replayed the last block's output for every block: the head saw (h₂, h₂, h₂)."""
    model, data = SkipsToHead().double().eval(), [x.double() for x in _data(seed=4)]
    data = [x[..., :4] for x in data]
    _assert_same_candidates(model, data)
    whole, rw, block, rb = _both(model, data, balf.BALFConfig(0.6, metric="params"))
    assert rb.ranks == rw.ranks


def test_a_shuffling_loader_calibrates_the_tail_on_matching_batches():
    """The tail paired one batch's block outputs with another batch's stem output."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(5)
    x = torch.randn(24, 5, 4, dtype=torch.float64)
    loader = DataLoader(TensorDataset(x), batch_size=4, shuffle=True)
    _assert_same_candidates(SkipsToHead().double().eval(), loader)


class AuxBlock(nn.Module):
    """Returns ``(hidden, aux)``; the model hands ``aux`` to the next block and to the head."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc, self.proj = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x, aux):
        h = x + torch.tanh(self.fc(x))
        return h, aux + self.proj(h)


class AuxChain(nn.Module):
    def __init__(self, d=8, n=3):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Linear(4, d)
        self.layers = nn.ModuleList(AuxBlock(d) for _ in range(n))
        self.head = nn.Linear(d, 5)

    def forward(self, x):
        h = self.stem(x)
        aux = torch.zeros_like(h)
        for layer in self.layers:
            h, aux = layer(h, aux)
        return self.head(aux)


def test_hidden_aux_blocks_carry_their_aux_output():
    """A block's ``(hidden, aux)`` output feeds the next block's second argument (it was
    replayed from block 0) and the head (the tail's replay crashed with a bare ValueError)."""
    model, data = AuxChain().double().eval(), [x[..., :4].double() for x in _data()]
    _assert_same_candidates(model, data)
    whole, rw, block, rb = _both(model, data, balf.BALFConfig(0.6, metric="params"))
    assert rb.ranks == rw.ranks
    with torch.no_grad():
        assert block(data[0]).shape == model(data[0]).shape


class SharedBlock(nn.Module):
    def __init__(self, d: int, shared: nn.Linear) -> None:
        super().__init__()
        self.fc, self.shared = nn.Linear(d, d), shared

    def forward(self, x):
        return x + self.shared(torch.relu(self.fc(x)))


class SharedAcross(nn.Module):
    """One module in two blocks, and one projection called before and after the chain."""

    def __init__(self, d=8):
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.proj = nn.Linear(4, d), nn.Linear(d, d)
        shared = nn.Linear(d, d)
        self.layers = nn.ModuleList(SharedBlock(d, shared) for _ in range(2))
        self.head = nn.Linear(d, 5)

    def forward(self, x):
        h = self.proj(self.stem(x))
        for layer in self.layers:
            h = layer(h)
        return self.head(self.proj(h))


def test_layers_called_in_several_places_get_every_calls_statistics():
    """The module shared by two blocks had statistics from the first block's calls only, the
    projection called before and after the chain from its first call only."""
    model, data = SharedAcross().double().eval(), [x[..., :4].double() for x in _data()]
    _assert_same_candidates(model, data)
    config = balf.RankRatioConfig(0.3)
    whole, rw, block, rb = _both(model, data, config)
    assert rb.layers["layers.0.shared"].factorized and rb.layers["proj"].factorized
    assert block.layers[0].shared is block.layers[1].shared  # still one module
    # used in several places: installed first with the whole-model factors
    torch.testing.assert_close(_effective(block.proj), _effective(whole.proj))
    torch.testing.assert_close(
        _effective(block.layers[0].shared), _effective(whole.layers[0].shared)
    )


def _tiny_qwen2():
    config = transformers.Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        use_sliding_window=True, sliding_window=4, max_window_layers=2,
    )  # fmt: skip
    assert config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(config).double().eval()


def _token_batches(n=3, length=16):
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(0, 64, (2, length), generator=g)} for _ in range(n)]


def _no_cache(m, b):
    return m(**b, use_cache=False)


def test_qwen2_sliding_window_layers_get_their_own_mask():
    """Blocks 2 and 3 attend through a sliding window: they were calibrated with block 0's full
    causal mask (different spectra, different ranks, silently)."""
    model, data = _tiny_qwen2(), _token_batches()
    _assert_same_candidates(model, data, forward=_no_cache)
    whole, rw, block, rb = _both(
        model, data, balf.BALFConfig(0.5, metric="params"), forward=_no_cache
    )
    assert rb.ranks == rw.ranks


def test_t5_blocks_get_the_position_bias_block_0_computes():
    """T5's first block computes the relative position bias and returns it; the model passes it
    to every later block, which ran without it."""
    config = transformers.T5Config(
        vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.T5EncoderModel(config).double().eval()
    _assert_same_candidates(model, _token_batches(), forward=lambda m, b: m(**b))


def test_the_propagation_pass_records_the_blocks_inputs_without_running_the_head(monkeypatch):
    """The recording pass of the propagation pass stops at the last block: one call of the head
    fewer per batch than with whole forward passes, and the same model."""
    data, config = _data(), balf.BALFConfig(0.5, metric="params")

    def run():
        model = Chain()
        calls = []
        model.head.register_forward_pre_hook(lambda m, a: calls.append(1))
        small, report = balf.compress(model, data, config, progress=False,
                                      strategy=balf.BlockByBlock())  # fmt: skip
        return len(calls), small, report

    stopping, small, report = run()
    record_chain = bbb.record_chain
    def whole_passes(*args, **kwargs):
        return record_chain(*args, **{**kwargs, "stop_at_last": False})

    monkeypatch.setattr(bbb, "record_chain", whole_passes)
    whole, reference, rr = run()
    assert stopping == whole - len(data)
    _assert_same_compression(small, report, reference, rr, data)
