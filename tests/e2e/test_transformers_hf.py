"""Hugging Face in and out.

Mapping batches (dicts, a tokenizer's ``BatchEncoding``, a ``DataLoader`` with
``DataCollatorWithPadding``) calibrate without ``forward=``; ``balf.save``/``balf.load`` work on
models built from their config. Folders (``save_pretrained``/``from_pretrained``) are tested in
``test_transformers_pretrained.py``. Every model is a tiny random-weight config built here (no
download).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

import balf

transformers = pytest.importorskip("transformers")
from _hf_models import tiny_bert_config, tiny_llama_config  # noqa: E402 (needs transformers)

VOCAB = 64


def _llama(**overrides):
    config = tiny_llama_config(vocab_size=VOCAB, **overrides)
    torch.manual_seed(0)
    return config, transformers.LlamaForCausalLM(config).eval()


def _bert():
    config = tiny_bert_config(vocab_size=VOCAB, num_attention_heads=2)
    torch.manual_seed(0)
    return config, transformers.BertModel(config).eval()


def _tokenizer():
    """A word-level tokenizer built in memory (``tokenizers``, no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[UNK]"] + [f"w{i}" for i in range(VOCAB - 2)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]"
    )


def _sentences(n: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 12, (n,), generator=g)
    return [
        " ".join(f"w{int(i)}" for i in torch.randint(0, VOCAB - 2, (int(k),), generator=g))
        for k in lengths
    ]


def _ids(n: int = 4, length: int = 12) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, length), generator=torch.Generator().manual_seed(1))


# -- Mapping batches ------------------------------------------------------------------------------


def test_a_batch_encoding_calibrates_without_forward():
    _, model = _bert()
    encoding = _tokenizer()(_sentences(8), padding=True, return_tensors="pt")
    assert not isinstance(encoding, dict)  # a UserDict, not a dict
    small, report = balf.compress(model, [encoding], balf.BALFConfig(0.6), progress=False)
    assert report.model_flops_before == balf.count_flops(model, {
        k: v[:1] for k, v in encoding.items()})  # fmt: skip
    assert report.layer_flops_ratio <= 0.6 + 1e-9
    with torch.no_grad():
        out = small(**encoding).last_hidden_state
    assert out.shape == (8, encoding["input_ids"].shape[1], 32) and torch.isfinite(out).all()


def test_a_batch_encoding_works_with_forward_too():
    _, model = _bert()
    encoding = _tokenizer()(_sentences(6), padding=True, return_tensors="pt")
    stats = balf.collect_statistics(model, [encoding], forward=lambda m, b: m(**b), progress=False)
    assert stats.num_samples == 6


def test_a_dataloader_with_data_collator_with_padding_calibrates():
    _, model = _bert()
    tokenizer = _tokenizer()
    features = [tokenizer(s) for s in _sentences(12)]  # a list of dicts of lists
    loader = DataLoader(
        features, batch_size=4, collate_fn=transformers.DataCollatorWithPadding(tokenizer)
    )
    stats = balf.collect_statistics(model, loader, progress=False)
    assert stats.num_samples == 12
    assert set(stats.example_kwargs) >= {"input_ids", "attention_mask"}


def test_plain_dict_batches_calibrate_a_causal_lm():
    _, model = _llama()
    ids = _ids(8)
    mask = torch.ones_like(ids[4:])
    batches = [{"input_ids": ids[:4]}, {"input_ids": ids[4:], "attention_mask": mask}]
    small, report = balf.compress(model, batches, balf.BALFConfig(0.7), progress=False)
    assert report.model_flops_ratio is not None and report.model_flops_ratio < 1
    assert report.layers["lm_head"].kind == "linear"
    with torch.no_grad():
        assert small(ids).logits.shape == (8, ids.shape[1], VOCAB)


# -- balf.save / balf.load on models built from their config -------------------------------------


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_save_and_load_on_models_built_from_config(tmp_path, family):
    config, model = _llama() if family == "llama" else _bert()
    cls = type(model)
    ids = _ids()
    small, _ = balf.compress(model, [{"input_ids": ids}], balf.BALFConfig(0.6), progress=False)
    path = balf.save(small, tmp_path / "m.safetensors")
    with torch.no_grad():
        expected = small(ids)[0]
    again = balf.load(path, cls(config))
    with torch.no_grad():
        torch.testing.assert_close(again(ids)[0], expected)
    with torch.device("meta"):  # non-persistent buffers (rotary frequencies, position ids)
        fresh = cls(config)
    with pytest.raises(balf.SaveFormatError, match="non-persistent buffers"):
        balf.load(path, fresh)
    accelerate = pytest.importorskip("accelerate")
    with accelerate.init_empty_weights(include_buffers=False):  # parameters only on the meta device
        fresh = cls(config)
    again = balf.load(path, fresh)
    with torch.no_grad():
        torch.testing.assert_close(again(ids)[0], expected)


# -- padding tokens stay out of the statistics ---------------------------------------------------

LENGTHS = (7, 19, 30, 12)


def _sequences():
    g = torch.Generator().manual_seed(3)
    return [torch.randint(2, VOCAB, (n,), generator=g) for n in LENGTHS]


def _padded_batch(side: str) -> dict:
    """The sequences in one batch, padded on ``side`` to the longest, with their mask."""
    seqs, width = _sequences(), max(LENGTHS)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        span = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[i, span], mask[i, span] = s, 1
    return {"input_ids": ids, "attention_mask": mask}


def _unpadded_batches() -> list[dict]:
    return [{"input_ids": s[None]} for s in _sequences()]


STRATEGIES = {
    "whole-model": None,
    "block-by-block": balf.BlockByBlock(),
    "block-by-block-refit": balf.BlockByBlock(refit=balf.AnchoredRefit(1.0)),
    "layer-sequential": balf.LayerSequential(balf.AnchoredRefit(0.5)),
}


def test_padded_rows_are_left_out_of_every_gram_matrix():
    """Right padding (a causal LM's real tokens do not see it): every layer's statistics equal
    those of the sequences calibrated one by one without padding, with or without forward=."""
    _, model = _llama()
    reference = balf.collect_statistics(model, _unpadded_batches(), progress=False)
    for forward in (None, lambda m, b: m(**b, use_cache=False)):
        stats = balf.collect_statistics(
            model, [_padded_batch("right")], progress=False, forward=forward
        )
        for name, st in reference.layers.items():
            assert stats.layers[name].rows == st.rows, name
            torch.testing.assert_close(stats.layers[name].gram, st.gram, rtol=1e-5, atol=1e-6)
    assert reference.layers["model.layers.0.mlp.down_proj"].rows == sum(LENGTHS)


@pytest.mark.parametrize("strategy", STRATEGIES.values(), ids=list(STRATEGIES))
def test_a_padded_batch_compresses_as_its_sequences_do(strategy):
    """The ranks an energy threshold keeps, and the energy it reports, come from the real tokens
    only (the padded rows cut the ranks to a fraction of what they need)."""
    _, model = _llama()

    def run(data):
        return balf.compress(
            model, data, balf.EnergyConfig(0.9), progress=False, strategy=strategy,
            forward=lambda m, b: m(**b, use_cache=False),
        )[1]  # fmt: skip

    padded, reference = run([_padded_batch("right")]), run(_unpadded_batches())
    assert padded.ranks == reference.ranks
    for name, lr in reference.layers.items():
        assert padded.layers[name].energy_kept == pytest.approx(lr.energy_kept, abs=1e-6)
