"""Tiny Hugging Face configurations shared by the tests (helpers, not tests; need transformers).

Every builder takes keyword overrides of its defaults; the defaults make a model of a few
thousand parameters: hidden 32, 2 blocks, 4 heads (Llama: grouped-query, 2 key/value heads; T5:
2 encoder and 2 decoder blocks of 4 heads of 8).
"""

from __future__ import annotations

from typing import Any

import transformers

_COMMON = {
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 64,
}
_LLAMA = {**_COMMON, "num_key_value_heads": 2}
_BERT = _COMMON
_GPT2 = {"vocab_size": 64, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64,
         "bos_token_id": 0, "eos_token_id": 0}  # fmt: skip
_T5 = {
    "vocab_size": 64,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_heads": 4,
    "decoder_start_token_id": 0,
    "pad_token_id": 0,
}


def tiny_llama_config(**overrides: Any) -> transformers.LlamaConfig:
    """A tiny ``LlamaConfig`` (see the module docstring) with ``overrides`` applied."""
    return transformers.LlamaConfig(**{**_LLAMA, **overrides})


def tiny_bert_config(**overrides: Any) -> transformers.BertConfig:
    """A tiny ``BertConfig`` (see the module docstring) with ``overrides`` applied."""
    return transformers.BertConfig(**{**_BERT, **overrides})


def tiny_gpt2_config(**overrides: Any) -> transformers.GPT2Config:
    """A tiny ``GPT2Config`` (``Conv1D`` projections; see the module docstring) with
    ``overrides`` applied; token ids 0 so that they lie in the tiny vocabulary."""
    return transformers.GPT2Config(**{**_GPT2, **overrides})


def tiny_t5_config(**overrides: Any) -> transformers.T5Config:
    """A tiny ``T5Config`` (see the module docstring) with ``overrides`` applied."""
    return transformers.T5Config(**{**_T5, **overrides})
