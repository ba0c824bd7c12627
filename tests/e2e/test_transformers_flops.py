"""Attention counted as the math it does, on batches of every layout.

``balf.count_flops`` (and with it every report ratio, the sweeps and the benchmarks, which all
count through it) must give the FLOPs of the unfused computation for fused attention: SDPA on the
CPU, ``nn.MultiheadAttention``'s and ``nn.TransformerEncoderLayer``'s inference fast paths, timm's
fused attention and Hugging Face's ``sdpa`` attention. The reference is the same model run
unfused: MHA fast path off and SDPA's math back-end (whose matrix products the counter sees),
timm's ``fused_attn=False``, Hugging Face's ``attn_implementation="eager"``.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import balf


@contextlib.contextmanager
def unfused():
    """Every attention through plain matrix products (MHA fast path off, SDPA's math path)."""
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


def _close(fused: int, reference: int) -> bool:
    return abs(fused - reference) <= 0.01 * reference


def test_torchvision_vit_b_counts_the_mha_fast_path():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16().eval()  # random weights
    x = torch.randn(1, 3, 224, 224)
    fused = balf.count_flops(model, x)
    with unfused():
        reference = balf.count_flops(model, x)
    assert reference > 34e9  # 17.5 GMACs: the attention and its projections are counted
    assert _close(fused, reference), (fused, reference)


def test_timm_deit_counts_fused_attention():
    timm = pytest.importorskip("timm")
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    x = torch.randn(1, 3, 224, 224)
    fused = balf.count_flops(model, x)
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    reference = balf.count_flops(model, x)
    assert _close(fused, reference), (fused, reference)


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "grouped-query"])
def test_hf_llama_sdpa_counts_like_eager(kv_heads):
    transformers = pytest.importorskip("transformers")
    from _hf_models import tiny_llama_config
    ids = torch.randint(0, 128, (1, 256))
    counts = {}
    for impl in ("sdpa", "eager"):
        config = tiny_llama_config(
            vocab_size=128, hidden_size=64, intermediate_size=128, num_key_value_heads=kv_heads,
            max_position_embeddings=512, attn_implementation=impl,
        )  # fmt: skip
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config).eval()
        counts[impl] = balf.count_flops(model, ids)
    assert _close(counts["sdpa"], counts["eager"]), counts


def test_transformer_encoder_layer_fast_path_is_counted():
    layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True).eval()
    x = torch.randn(2, 10, 64)
    fused = balf.count_flops(layer, x)
    with unfused():
        reference = balf.count_flops(layer, x)
    assert fused == reference


def test_sdpa_is_counted_directly():
    q, k, v = (torch.randn(2, 3, 16, 8) for _ in range(3))

    class Attn(nn.Module):
        def forward(self, q, k, v):
            return nn.functional.scaled_dot_product_attention(q, k, v)

    assert balf.count_flops(Attn(), (q, k, v)) == 2 * 2 * (2 * 3) * 16 * 16 * 8


def _small_vit() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=4, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128
    ).eval()


def test_report_ratios_of_a_vit_are_those_of_the_unfused_model():
    model = _small_vit()
    x = torch.randn(16, 3, 32, 32)
    small, report = balf.compress(model, x, balf.BALFConfig(0.5), progress=False)
    with unfused():
        before = balf.count_flops(model, x[:1])
        after = balf.count_flops(small, x[:1])
    assert _close(report.model_flops_before, before)
    assert _close(report.model_flops_after, after)
    assert report.model_flops_ratio == pytest.approx(after / before, rel=0.01)


# -- batches of other layouts: sequence-first, padded, per-head masks ---------------------------


def _encoder(batch_first: bool) -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=batch_first)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()


@pytest.mark.parametrize("calibration", ["statistics", "data-free"])
def test_sequence_first_inputs_count_one_sample_not_one_time_step(calibration):
    """``(L, B, E)`` batches of a ``batch_first=False`` encoder: the example input is the
    first sample ``(L, 1, E)``, so the report's ratio is the model's (it used to count one
    time step of every sample: 0.470 of the FLOPs kept where the model keeps 0.641)."""
    model = _encoder(batch_first=False)
    x = torch.randn(24, 16, 32)  # 24 time steps of 16 samples
    config = balf.UniformConfig(0.5, activation_aware=calibration == "statistics")
    small, report = balf.compress(model, [x], config, progress=False)
    with unfused():
        before = balf.count_flops(model, x[:, :1])
        after = balf.count_flops(small, x[:, :1])
    assert report.model_flops_before == before
    assert report.model_flops_ratio == pytest.approx(after / before, rel=1e-6)
    if calibration == "statistics":
        stats = balf.collect_statistics(model, [x], progress=False)
        assert stats.num_samples == 16 and tuple(stats.example_input.shape) == (24, 1, 32)


def test_a_batch_first_twin_gives_the_same_report():
    """The same weights fed batch-first and sequence-first keep the same share of FLOPs."""
    x = torch.randn(16, 24, 32)
    reports = {}
    for batch_first in (True, False):
        model = _encoder(batch_first)
        data = x if batch_first else x.transpose(0, 1).contiguous()
        _, reports[batch_first] = balf.compress(model, [data], balf.BALFConfig(0.5),
                                                progress=False)  # fmt: skip
    assert reports[True].ranks == reports[False].ranks
    assert reports[True].model_flops_ratio == pytest.approx(reports[False].model_flops_ratio)


def test_a_padded_batch_on_the_nested_fast_path_counts_each_sequence():
    """The fast path packs the real tokens of a padded batch into a nested tensor: attention
    is counted per sequence (it was counted over all tokens as one sequence: 1.36× the work)."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
    model = nn.TransformerEncoder(layer, 2).eval()  # nested tensors on
    lengths = [20, 12, 6, 3]
    x = torch.randn(len(lengths), max(lengths), 32)
    mask = torch.arange(max(lengths)) >= torch.tensor(lengths)[:, None]  # True = padding
    fused = balf.count_flops(model, (x,), {"src_key_padding_mask": mask})
    reference = sum(balf.count_flops(model, x[i : i + 1, :n]) for i, n in enumerate(lengths))
    assert fused == reference


def test_per_head_attention_masks_in_args_kwargs_batches_are_cut_per_sample():
    """``nn.MultiheadAttention``'s documented ``(B·heads, L, S)`` mask in ``(args, kwargs)``
    batches: the example keeps the first sample's heads (the cut used to crash inside balf)."""

    class Attend(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(16, 32)
            self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
            self.out = nn.Linear(32, 8)

        def forward(self, x, attn_mask):
            h = self.inp(x)
            return self.out(self.attn(h, h, h, attn_mask=attn_mask, need_weights=False)[0])

    torch.manual_seed(0)
    model = Attend().eval()
    x = torch.randn(6, 10, 16)
    mask = torch.rand(6 * 4, 10, 10) < 0.2
    small, report = balf.compress(model, [((x,), {"attn_mask": mask})], balf.BALFConfig(0.6),
                                  progress=False)  # fmt: skip
    assert report.model_flops_before == balf.count_flops(model, (x[:1],), {"attn_mask": mask[:4]})
    with torch.no_grad():
        assert small(x, mask).shape == (6, 10, 8)
