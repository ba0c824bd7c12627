"""Gram matrices ``rowsᵀ rows`` of row and channel matrices without copying the activations."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["channel_gram", "gram_2d"]

# Upper bound on the elements of the per-image Gram matrices summed at once (float32: 64 MiB).
_GRAM_CHUNK_ELEMENTS = 1 << 24


def gram_2d(rows: Tensor) -> Tensor:
    """``rowsᵀ rows`` for ``(N, S)`` rows, ``(S, S)``.

    For wide matrices only the upper block triangle of a 2×2 blocking is multiplied (3 of the 4
    block products; the fourth is a transpose), saving about a quarter of the work.
    """
    s = rows.shape[1]
    if s < 256:
        return rows.t() @ rows
    h = s // 2
    a, b = rows[:, :h], rows[:, h:]
    out = rows.new_empty(s, s)
    out[:h, :h] = a.t() @ a
    out[h:, h:] = b.t() @ b
    upper = a.t() @ b
    out[:h, h:] = upper
    out[h:, :h] = upper.t()
    return out


def _per_image_gram(blocks: Tensor) -> Tensor:
    """``Σ_b X_b X_bᵀ`` for ``(B, S, L)`` blocks, ``(S, S)``, accumulated in place.

    One matrix product per image into a single accumulator (no ``(B, S, S)`` intermediate and no
    copy of the input); for ``S ≥ 256`` only 3 of the 4 blocks of a 2×2 blocking are multiplied.
    """
    s = blocks.shape[1]
    out = blocks.new_zeros(s, s)
    if s < 256:
        for x in blocks:
            out.addmm_(x, x.t())
        return out
    h = s // 2
    top_left, bottom_right, top_right = out[:h, :h], out[h:, h:], out[:h, h:]
    for x in blocks:
        a, b = x[:h], x[h:]
        top_left.addmm_(a, a.t())
        bottom_right.addmm_(b, b.t())
        top_right.addmm_(a, b.t())
    out[h:, :h] = top_right.t()
    return out


def channel_gram(y: Tensor, groups: int) -> Tensor:
    """``Σ_rows`` Gram of channel vectors of an NCHW tensor, ``(G, S, S)``, without copying it.

    ``y`` is ``(B, G·S, H, W)``; every spatial position of every image is a row. Channels-last
    memory gives the ``(B·H·W, S)`` rows directly; for NCHW memory the per-image ``(S, H·W)``
    blocks are multiplied one image at a time (``G = 1``) or in group batches (``G > 1``).
    """
    b, c, h, w = y.shape
    s = c // groups
    if groups == 1 and y.is_contiguous(memory_format=torch.channels_last) and h * w > 1:
        return gram_2d(y.permute(0, 2, 3, 1).reshape(-1, c)).unsqueeze(0)
    if groups == 1:
        return _per_image_gram(y.reshape(b, c, h * w)).unsqueeze(0)
    blocks = y.reshape(b, groups, s, h * w)
    step = max(1, _GRAM_CHUNK_ELEMENTS // max(groups * s * s, 1))
    gram = None
    for start in range(0, b, step):
        chunk = blocks[start : start + step]
        n = chunk.shape[0]
        flat = chunk.reshape(n * groups, s, h * w)
        part = torch.bmm(flat, flat.transpose(1, 2)).view(n, groups, s, s).sum(0)
        gram = part if gram is None else gram + part
    return gram
