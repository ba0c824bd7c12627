"""Every projection reachable.

``nn.MultiheadAttention``'s packed ``in_proj_weight`` and its ``out_proj``, and Hugging Face's
``Conv1D`` compress, save, reload and export like ``nn.Linear``; layers the forward pass never
calls (or uses only through their weight) are skipped with the reason instead of aborting;
``layers=``/``exclude=`` take names, glob patterns and suffixes.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import balf
from balf.calibration.uncalled import FUNCTIONAL_REASON, UNUSED_REASON
from balf.layers.attention import UnpackedMultiheadAttention

# -- nn.MultiheadAttention ----------------------------------------------------------------------


def _mha_case(batch_first: bool, kdim: int | None, masks: str, cross: bool):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first, kdim=kdim, vdim=kdim).eval()
    b, l_q = 3, 5
    other = cross or kdim is not None
    l_k = 7 if other else l_q
    q = torch.randn(b, l_q, 16)
    kv = torch.randn(b, l_k, kdim or 16) if other else q
    if not batch_first:
        q = q.transpose(0, 1)
        kv = kv.transpose(0, 1) if other else q
    kwargs = {}
    if masks == "bool":
        kwargs["attn_mask"] = torch.rand(l_q, l_k) > 0.7
        kwargs["attn_mask"][:, 0] = False
    elif masks == "float":
        kwargs["attn_mask"] = torch.randn(l_q, l_k)
    elif masks == "padding":
        kwargs["key_padding_mask"] = torch.zeros(b, l_k, dtype=torch.bool)
        kwargs["key_padding_mask"][:, -1] = True
    return mha, q, kv, kwargs


@pytest.mark.parametrize(
    ("batch_first", "kdim", "masks", "cross", "need_weights"),
    list(
        itertools.product(
            [True, False],
            [None, 12],
            ["none", "bool", "float", "padding"],
            [False, True],
            [True, False],
        )
    ),  # fmt: skip
    ids=lambda v: str(v),
)
def test_unpacked_attention_computes_what_multihead_attention_does(
    batch_first, kdim, masks, cross, need_weights
):
    mha, q, kv, kwargs = _mha_case(batch_first, kdim, masks, cross)
    unpacked = UnpackedMultiheadAttention.from_mha(mha)
    with torch.no_grad():
        expected, w_expected = mha(q, kv, kv, need_weights=need_weights, **kwargs)
        out, w = unpacked(q, kv, kv, need_weights=need_weights, **kwargs)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    if need_weights:
        torch.testing.assert_close(w, w_expected, atol=1e-5, rtol=1e-4)
    else:
        assert w is None and w_expected is None
    # the parameters are shared, not copied
    if kdim is None:
        assert unpacked.in_proj.weight is mha.in_proj_weight
    assert unpacked.out_proj is mha.out_proj


def _vit() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=4, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
        num_classes=10,
    ).eval()  # fmt: skip
    nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision starts the head at zero
    return model


def test_vit_attention_projections_are_layers():
    model = _vit()
    x = torch.randn(16, 3, 32, 32)
    small, report = balf.compress(model, x, balf.BALFConfig(0.5), progress=False)
    attn = "encoder.layers.encoder_layer_0.self_attention"
    assert report.skipped == {}
    assert report.layers[f"{attn}.in_proj"].factorized  # the packed (3E, E) weight
    assert report.layers[f"{attn}.out_proj"].kind == "linear"
    assert isinstance(small.get_submodule(attn), UnpackedMultiheadAttention)
    assert isinstance(small.get_submodule(f"{attn}.in_proj"), balf.LowRankLinear)
    assert type(model.get_submodule(attn)) is nn.MultiheadAttention  # caller's model untouched
    assert report.layer_flops_ratio <= 0.5 + 1e-9


def test_in_proj_statistics_are_those_of_the_attention_input():
    model = _vit()
    x = torch.randn(4, 3, 32, 32)
    attn = "encoder.layers.encoder_layer_1.self_attention"
    inputs = []
    hook = model.get_submodule(attn).register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
    with torch.no_grad():
        model(x)
    hook.remove()
    stats = balf.collect_statistics(model, x, layers=[f"{attn}.in_proj"], progress=False)
    st = stats.layers[f"{attn}.in_proj"]
    rows = inputs[0].reshape(-1, 64).double()
    assert st.side == "input" and st.rows == rows.shape[0]
    expected = rows.t() @ rows  # the library multiplies in float32, accumulates in float64
    torch.testing.assert_close(st.gram[0], expected, rtol=1e-4, atol=1e-5 * float(expected.max()))


def test_compressed_attention_saves_reloads_and_exports(tmp_path):
    model = _vit()
    x = torch.randn(16, 3, 32, 32)
    small, _ = balf.compress(model, x, balf.BALFConfig(0.5), progress=False)
    path = balf.save(small, tmp_path / "vit.safetensors")
    with torch.no_grad():
        expected = small(x[:2])
    for device in ("cpu", "meta"):
        with torch.device(device):
            fresh = torchvision.models.VisionTransformer(
                image_size=32, patch_size=4, num_layers=2, num_heads=4, hidden_dim=64,
                mlp_dim=128, num_classes=10,
            )  # fmt: skip
        again = balf.load(path, fresh)
        with torch.no_grad():
            torch.testing.assert_close(again(x[:2]), expected)
    program = torch.export.export(small, (x[:2],))
    torch.testing.assert_close(program.module()(x[:2]), expected, atol=1e-5, rtol=1e-4)


# -- layers never called, or called only through their weight --------------------------------


class FunctionalAndUnused(nn.Module):
    """``qkv`` used through its weight (as torchvision's Swin), ``aux`` never used in eval."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.qkv = nn.Linear(16, 48)
        self.aux = nn.Linear(16, 3)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        h = self.embed(x)
        q, k, v = F.linear(h, self.qkv.weight, self.qkv.bias).chunk(3, dim=-1)
        h = h + F.scaled_dot_product_attention(q, k, v)
        if self.training:
            return self.head(h), self.aux(h)
        return self.head(h)


@pytest.mark.parametrize(
    "config", [balf.BALFConfig(0.6), balf.EnergyConfig(0.9, activation_aware=False)],
    ids=lambda c: c.mode,
)  # fmt: skip
def test_uncalled_layers_are_skipped_with_the_reason(config):
    torch.manual_seed(0)
    model = FunctionalAndUnused().eval()
    x = torch.randn(6, 5, 8)
    small, report = balf.compress(model, x, config, progress=False)
    assert report.skipped == {"qkv": FUNCTIONAL_REASON, "aux": UNUSED_REASON}
    assert list(report.layers) == ["embed", "head"]
    assert type(small.qkv) is nn.Linear and type(small.aux) is nn.Linear


def test_collect_statistics_lists_every_uncalled_layer():
    model = FunctionalAndUnused().eval()
    stats = balf.collect_statistics(model, torch.randn(4, 5, 8), progress=False)
    assert set(stats.layers) == {"embed", "head"}
    assert stats.extra["skipped"] == {"qkv": FUNCTIONAL_REASON, "aux": UNUSED_REASON}


def test_skipped_layers_survive_the_statistics_cache(tmp_path):
    model = FunctionalAndUnused().eval()
    x = torch.randn(6, 5, 8)
    reports = [
        balf.compress(model, x, balf.BALFConfig(0.6), cache=balf.Cache(tmp_path), progress=False)[1]
        for _ in range(2)  # the second call loads the statistics from the cache
    ]
    assert reports[0].skipped == reports[1].skipped == {
        "qkv": FUNCTIONAL_REASON, "aux": UNUSED_REASON}  # fmt: skip
    assert reports[0].ranks == reports[1].ranks


def test_only_uncalled_layers_is_a_clear_error():
    model = FunctionalAndUnused().eval()
    with pytest.raises(balf.StatisticsError, match="none of the 2 chosen layers was called"):
        balf.collect_statistics(model, torch.randn(4, 5, 8), layers=["qkv", "aux"], progress=False)
    with pytest.raises(balf.BALFError, match="none of the 2 chosen layers was called"):
        balf.compress(model, torch.randn(4, 5, 8), balf.BALFConfig(0.5), layers=["qkv", "aux"],
                      progress=False)  # fmt: skip
    plain_svd = balf.EnergyConfig(0.9, activation_aware=False)  # no statistics: rows measured
    with pytest.raises(balf.BALFError, match="no chosen layer is called"):
        balf.compress(model, torch.randn(4, 5, 8), plain_svd, layers=["qkv", "aux"],
                      progress=False)  # fmt: skip


def test_torchvision_swin_compresses_around_its_functional_qkv():
    torch.manual_seed(0)
    model = torchvision.models.swin_t(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    stats = balf.collect_statistics(model, x, progress=False)
    qkv = [n for n in stats.extra["skipped"] if n.endswith("attn.qkv")]
    assert len(qkv) == 12  # every block's qkv, not only the first
    assert all(stats.extra["skipped"][n] == FUNCTIONAL_REASON for n in qkv)


# -- layers= and exclude= with names, glob patterns and suffixes -------------------------------


class Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"q_proj": nn.Linear(8, 8), "fc": nn.Linear(8, 8)}) for _ in range(3)
        )
        self.lm_head = nn.Linear(8, 4)

    def forward(self, x):
        for b in self.blocks:
            x = x + b["fc"](torch.relu(b["q_proj"](x)))
        return self.lm_head(x)


@pytest.mark.parametrize(
    ("layers", "exclude", "expected"),
    [
        (["blocks.*.fc"], None, ["blocks.0.fc", "blocks.1.fc", "blocks.2.fc"]),
        (["q_proj"], None, ["blocks.0.q_proj", "blocks.1.q_proj", "blocks.2.q_proj"]),
        (["blocks.1.*", "lm_head"], None, ["blocks.1.q_proj", "blocks.1.fc", "lm_head"]),
        (None, ["lm_head", "blocks.[01].*"], ["blocks.2.q_proj", "blocks.2.fc"]),
    ],
    ids=["glob", "suffix", "glob-and-name", "exclude"],
)
def test_layers_and_exclude_take_names_patterns_and_suffixes(layers, exclude, expected):
    model = Blocks()
    x = torch.randn(16, 8)
    _, report = balf.compress(
        model, x, balf.BALFConfig(0.8), layers=layers, exclude=exclude, progress=False
    )
    assert list(report.layers) == expected
    if exclude:
        assert report.skipped["lm_head"] == "excluded by exclude='lm_head'"


@pytest.mark.parametrize(
    "exclude",
    [["blocks.1"], ["blocks.*1"], ["1"]],
    ids=["container-name", "container-pattern", "container-suffix"],
)
def test_exclude_naming_a_container_excludes_the_layers_inside(exclude):
    """``exclude=["model.layers.0"]``, ``["*.mlp"]``, ``["self_attn"]`` name containers: they used
    to exclude nothing, silently."""
    _, report = balf.compress(
        Blocks(), torch.randn(16, 8), balf.BALFConfig(0.8), exclude=exclude, progress=False
    )
    assert "blocks.1.q_proj" not in report.layers and "blocks.1.fc" not in report.layers
    assert report.skipped["blocks.1.fc"] == f"excluded by exclude={exclude[0]!r}"
    assert {"blocks.0.fc", "blocks.2.q_proj", "lm_head"} <= set(report.layers)


def test_exclude_naming_a_transformers_block_and_attention_excludes_their_layers():
    pytest.importorskip("transformers")
    from _hf_models import tiny_llama_config
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config()).eval()
    ids = torch.randint(0, 64, (4, 16))
    exclude = ["model.layers.0", "self_attn", "*.mlp"]
    _, report = balf.compress(
        model, [{"input_ids": ids}], balf.BALFConfig(0.8), exclude=exclude, progress=False
    )
    inside = ("model.layers.0.", ".self_attn.", ".mlp.")
    assert not [n for n in report.layers if any(part in n for part in inside)]
    assert report.skipped["model.layers.1.self_attn.q_proj"] == "excluded by exclude='self_attn'"
    assert report.skipped["model.layers.1.mlp.up_proj"] == "excluded by exclude='*.mlp'"


@pytest.mark.parametrize(
    ("layers", "exclude", "match"),
    [
        (["blocks.*.attn"], None, "unknown layer name 'blocks.*.attn'"),
        (None, ["head"], "unknown `exclude` entry 'head'"),
        ("lm_head", None, "list of module names or patterns"),
    ],
    ids=["layers", "exclude", "string"],
)
def test_selections_that_match_nothing_are_clear_errors(layers, exclude, match):
    with pytest.raises(balf.BALFError, match=match):
        balf.Compressor(Blocks(), torch.randn(4, 8), layers=layers, exclude=exclude)


# -- Hugging Face Conv1D -------------------------------------------------------------------------


def _gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers, config, transformers.GPT2LMHeadModel(config).eval()


def test_gpt2_conv1d_layers_compress_save_and_reload(tmp_path):
    transformers, config, model = _gpt2()
    ids = torch.randint(0, 100, (8, 16))
    small, report = balf.compress(model, ids, balf.BALFConfig(0.6), progress=False)
    conv1d = [n for n, lr in report.layers.items() if lr.kind == "hf_conv1d"]
    assert len(conv1d) == 8 and all(report.layers[n].factorized for n in conv1d)
    assert report.layer_flops_ratio <= 0.6 + 1e-9
    path = balf.save(small, tmp_path / "gpt2.safetensors")
    assert {e["kind"] for e in balf.read_spec(path)["layers"]} == {"hf_conv1d"}
    with torch.no_grad():
        expected = small(ids).logits
    for device in ("cpu", "meta"):
        with torch.device(device):
            fresh = transformers.GPT2LMHeadModel(config)
        again = balf.load(path, fresh)
        with torch.no_grad():
            torch.testing.assert_close(again(ids).logits, expected)


def test_conv1d_at_full_rank_is_the_dense_layer_and_exports():
    transformers = pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    layer = Conv1D(24, 10)  # nf=24 outputs, nx=10 inputs
    nn.init.normal_(layer.bias)
    x = torch.randn(32, 7, 10)
    stats = balf.collect_statistics(layer, x, progress=False)
    small = balf.factorize_layer(layer, balf.decompose_layer(layer, stats.layers[""]), 10)
    with torch.no_grad():
        torch.testing.assert_close(small(x), layer(x), atol=1e-5, rtol=1e-4)
    program = torch.export.export(small, (x,))
    torch.testing.assert_close(program.module()(x), small(x))
    assert transformers is not None


def test_importing_balf_does_not_import_transformers():
    code = "import sys, balf; assert 'transformers' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- nn.TransformerEncoder (its fused fast path reads the dense weights) ------------------------


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2)  # nested tensors on: padding masks go fused
        self.head = nn.Linear(32, 3)

    def forward(self, x, mask=None):
        return self.head(self.enc(x, src_key_padding_mask=mask))


@pytest.mark.parametrize("layers", [None, ["*.linear1"]], ids=["all", "linear1-only"])
def test_transformer_encoder_runs_compressed_saves_and_reloads(tmp_path, layers):
    torch.manual_seed(0)
    model = Encoder().eval()
    x = torch.randn(8, 10, 32)
    mask = torch.zeros(8, 10, dtype=torch.bool)
    mask[:, 7:] = True  # left-aligned padding: the encoder's nested-tensor path applies
    small, report = balf.compress(model, x, balf.BALFConfig(0.6), layers=layers, progress=False)
    assert any(lr.factorized for lr in report.layers.values())
    with torch.no_grad():
        out, out_masked = small(x), small(x, mask)
    assert out.shape == (8, 10, 3) and torch.isfinite(out).all()
    assert torch.isfinite(out_masked[:, :7]).all()
    path = balf.save(small, tmp_path / "enc.safetensors")
    again = balf.load(path, Encoder())
    with torch.no_grad():
        torch.testing.assert_close(again(x), out)
        torch.testing.assert_close(again(x, mask)[:, :7], out_masked[:, :7])


def test_googlenet_aux_heads_are_skipped_in_eval():
    torch.manual_seed(0)
    model = torchvision.models.googlenet(aux_logits=True, init_weights=False).eval()
    stats = balf.collect_statistics(model, torch.randn(2, 3, 64, 64), progress=False)
    aux = {n for n in stats.extra["skipped"] if n.startswith("aux")}
    assert aux == {f"aux{i}.{m}" for i in (1, 2) for m in ("conv.conv", "fc1", "fc2")}
    assert all(stats.extra["skipped"][n] == UNUSED_REASON for n in aux)
    assert "inception5b.branch1.conv" in stats.layers


# -- ONNX ------------------------------------------------------------------------------------------


def _conv1d_mlp() -> nn.Module:
    pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    return nn.Sequential(Conv1D(48, 16), nn.GELU(), Conv1D(16, 48)).eval()


@pytest.mark.parametrize("family", ["vit-attention", "hf-conv1d"])
def test_compressed_projections_export_to_onnx(tmp_path, family):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    if family == "vit-attention":
        model, x = _vit(), torch.randn(8, 3, 32, 32)
    else:
        model, x = _conv1d_mlp(), torch.randn(8, 5, 16)
    small, report = balf.compress(model, x, balf.BALFConfig(0.5), progress=False)
    assert any(
        lr.factorized and lr.kind in ("linear", "hf_conv1d") for lr in report.layers.values()
    )
    path = balf.io.export.export_onnx(small, x[:2], tmp_path / "small.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x[:3].numpy()})
    with torch.no_grad():
        expected = small(x[:3])
    torch.testing.assert_close(torch.from_numpy(out), expected, atol=1e-4, rtol=1e-4)


def test_latency_tables_cover_attention_projections():
    model = _vit()
    compressor = balf.Compressor(model, torch.randn(4, 3, 32, 32), progress=False)
    attn = "encoder.layers.encoder_layer_0.self_attention"
    assert {f"{attn}.in_proj", f"{attn}.out_proj"} <= set(compressor.targets)
    table = balf.ranks.latency.measure_latency(
        model, torch.randn(1, 3, 32, 32), compressor.targets, points=2, min_run_time=0.002,
        progress=False,
    )  # fmt: skip
    assert set(table.layers) == set(compressor.targets)
    assert type(model.get_submodule(attn)) is nn.MultiheadAttention
