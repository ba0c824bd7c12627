"""T5-family models compress, run, and save/load, whole-model and in place.

T5 reads ``self.wo.weight`` (to pick its dtype) in every forward, after ``wo`` was factorized:
this used to end ``compress`` in ``AttributeError: 'LowRankLinear' object has no attribute
'weight'`` and, with ``inplace=True``, leave the caller's T5 unable to run. A factorized layer
now answers as the dense one (:mod:`balf.layers.lowrank`). Tiny random-weight configs built here
(no download).
"""

from __future__ import annotations

import pytest
import torch

import balf

transformers = pytest.importorskip("transformers")
from _hf_models import tiny_t5_config  # noqa: E402 (needs transformers)


def _t5(**overrides):
    torch.manual_seed(0)
    return transformers.T5ForConditionalGeneration(tiny_t5_config(**overrides)).eval()


def _batches(n: int = 4):
    g = torch.Generator().manual_seed(1)
    return [
        {
            "input_ids": torch.randint(1, 64, (8, 12), generator=g),
            "decoder_input_ids": torch.randint(1, 64, (8, 6), generator=g),
        }
        for _ in range(n)
    ]


def _wo(model) -> list[str]:
    return [n for n, _ in model.named_modules() if n.endswith("DenseReluDense.wo")]


@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
@pytest.mark.parametrize("ff", ["relu", "gated-gelu"])
def test_a_t5_compresses_whole_model_and_runs(inplace, ff):
    model = _t5(feed_forward_proj=ff)
    batches = _batches()
    with torch.no_grad():
        dense = model(**batches[0]).logits
    small, report = balf.compress(
        model, batches, balf.BALFConfig(0.6), progress=False, inplace=inplace
    )
    assert (small is model) == inplace
    assert all(report.layers[n].factorized for n in _wo(model))  # T5 reads their weight
    assert report.layer_flops_ratio <= 0.6 + 1e-9
    with torch.no_grad():
        out = small(**batches[0]).logits
    assert out.shape == dense.shape and torch.isfinite(out).all()
    assert (out - dense).norm() < dense.norm()  # an approximation, not noise
    # the report counts what the compressed model computes, weight reads included
    example = {k: v[:1] for k, v in batches[0].items()}
    assert report.model_flops_after == balf.count_flops(small, example)
    generated = small.generate(batches[0]["input_ids"][:2], max_new_tokens=3, do_sample=False)
    assert generated.shape[0] == 2


def test_a_compressed_t5_round_trips_through_a_folder(tmp_path):
    model = _t5()
    batches = _batches()
    small, report = balf.compress(model, batches, balf.BALFConfig(0.6), progress=False)
    again = balf.load_pretrained(balf.save_pretrained(small, tmp_path / "t5"))
    assert type(again) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(again(**batches[1]).logits, small(**batches[1]).logits)
