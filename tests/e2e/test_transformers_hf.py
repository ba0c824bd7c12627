"""Hugging Face in and out (issue 22, item 3).

Mapping batches (dicts, a tokenizer's ``BatchEncoding``, a ``DataLoader`` with
``DataCollatorWithPadding``) calibrate without ``forward=``; ``balf.save``/``balf.load`` work on
models built from their config; ``balf.save_pretrained`` writes a folder that
``balf.load_pretrained`` reloads with its ranks, while ``from_pretrained`` on it fails loudly.
Every model is a tiny random-weight config built here (no download).
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


# -- folders: save_pretrained / load_pretrained ----------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "bert", "gpt2"])
def test_a_compressed_model_round_trips_through_a_folder(tmp_path, family):
    if family == "llama":
        _, model = _llama(tie_word_embeddings=False)
    elif family == "bert":
        _, model = _bert()
    else:
        config = transformers.GPT2Config(
            n_embd=32, n_layer=2, n_head=2, vocab_size=VOCAB, n_positions=64, bos_token_id=0,
            eos_token_id=0,
        )  # fmt: skip
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(config).eval()
    ids = _ids()
    small, report = balf.compress(model, [{"input_ids": ids}], balf.BALFConfig(0.5), progress=False)
    folder = balf.save_pretrained(small, tmp_path / "compressed")
    assert {p.name for p in folder.iterdir()} >= {
        "config.json", "balf_spec.json", "balf_model.safetensors"}  # fmt: skip
    again = balf.load_pretrained(folder)
    assert type(again) is type(model)
    ranks = {e["name"]: e["rank"] for e in balf.model_spec(again)["layers"]}
    assert ranks == {n: lr.rank for n, lr in report.layers.items() if lr.factorized}
    with torch.no_grad():
        torch.testing.assert_close(again(ids)[0], small(ids)[0])
    assert balf.count_params(again) == balf.count_params(small)


def test_plain_from_pretrained_on_the_folder_fails_loudly(tmp_path):
    _, model = _llama()
    small, _ = balf.compress(model, [{"input_ids": _ids()}], balf.BALFConfig(0.5), progress=False)
    folder = balf.save_pretrained(small, tmp_path / "compressed")
    with pytest.raises(OSError, match="no file named model.safetensors"):
        transformers.AutoModelForCausalLM.from_pretrained(folder)
    with pytest.raises(OSError):
        transformers.LlamaForCausalLM.from_pretrained(folder)


def test_saving_over_hugging_face_weights_is_refused(tmp_path):
    _, model = _llama()
    model.save_pretrained(tmp_path)
    with pytest.raises(balf.BALFError, match="save into an empty folder"):
        balf.save_pretrained(model, tmp_path)
    with pytest.raises(balf.SaveFormatError, match="not a folder written by balf.save_pretrained"):
        balf.load_pretrained(tmp_path)


def test_save_pretrained_needs_a_transformers_model(tmp_path):
    with pytest.raises(balf.BALFError, match="has no transformers config"):
        balf.save_pretrained(torch.nn.Linear(2, 2), tmp_path)


def test_load_pretrained_without_accelerate_builds_on_the_cpu(tmp_path, monkeypatch):
    _, model = _llama()
    ids = _ids()
    small, _ = balf.compress(model, [{"input_ids": ids}], balf.BALFConfig(0.5), progress=False)
    folder = balf.save_pretrained(small, tmp_path / "compressed")
    monkeypatch.setitem(__import__("sys").modules, "accelerate", None)  # import fails
    again = balf.load_pretrained(folder)
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, small(ids).logits)
