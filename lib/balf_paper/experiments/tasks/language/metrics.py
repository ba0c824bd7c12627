"""The language experiments' quality metrics: perplexity and STS Spearman correlation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["encode_sentences", "perplexity", "spearman"]


@torch.no_grad()
def perplexity(model: nn.Module, windows: Tensor, batch_size: int = 1) -> float:
    """``exp`` of the mean next-token loss over every window ``(n, L)`` (``L − 1`` predictions
    each; windows are independent, no key/value cache)."""
    total, count = 0.0, 0
    for chunk in windows.split(batch_size):
        out = model(input_ids=chunk, labels=chunk, use_cache=False)
        predicted = chunk.numel() - chunk.shape[0]
        total += float(out.loss) * predicted
        count += predicted
    return math.exp(total / count)


@torch.no_grad()
def encode_sentences(
    model: nn.Module, tokenizer: Any, sentences: list[str], batch_size: int = 64
) -> Tensor:
    """Mean-pooled (over non-padding tokens) last hidden states, ``(len(sentences), hidden)``.

    Sentences are batched in order of length, so padding stays small.
    """
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    out = [None] * len(sentences)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer([sentences[i] for i in idx], padding=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        for i, vector in zip(idx, pooled, strict=True):
            out[i] = vector
    return torch.stack(out)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson correlation of the tie-averaged ranks)."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")
