"""Gram matrices ``rowsᵀ rows`` of row and channel matrices without copying the activations."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["channel_gram", "gram_2d"]

# Upper bound on the elements of the per-image Gram matrices summed at once (float32: 64 MiB).
_GRAM_CHUNK_ELEMENTS = 1 << 24


#: Columns per panel of the blocked Gram products (below twice this, one plain product).
_PANEL = 128
_MAX_PANELS = 8


def _panel_edges(s: int) -> list[int]:
    """Edges of the column panels of an ``S``-wide Gram: ``min(8, S // 128)`` panels."""
    n = max(1, min(_MAX_PANELS, s // _PANEL))
    return [round(i * s / n) for i in range(n + 1)]


def gram_2d(rows: Tensor) -> Tensor:
    """``rowsᵀ rows`` for ``(N, S)`` rows, ``(S, S)``.

    For wide matrices only the upper block triangle is multiplied, one product per panel of
    columns (up to 8 panels of at least 128 columns: about ``(n+1)/2n`` of the work; the lower
    triangle is a transpose), which on a CPU takes about 0.6 of one full product.
    """
    edges = _panel_edges(rows.shape[1])
    if len(edges) == 2:
        return rows.t() @ rows
    out = rows.new_empty(rows.shape[1], rows.shape[1])
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        panel = rows[:, a:b].t() @ rows[:, a:]  # (b − a, S − a): rows a..b, columns a..S
        out[a:b, a:] = panel
        out[b:, a:b] = panel[:, b - a :].t()
    return out


def _per_image_gram(blocks: Tensor) -> Tensor:
    """``Σ_b X_b X_bᵀ`` for ``(B, S, L)`` blocks, ``(S, S)``, accumulated in place.

    One matrix product per image (and panel, as in :func:`gram_2d`) into a single accumulator:
    no ``(B, S, S)`` intermediate and no copy of the input.
    """
    s = blocks.shape[1]
    out = blocks.new_zeros(s, s)
    edges = _panel_edges(s)
    if len(edges) == 2:
        for x in blocks:
            out.addmm_(x, x.t())
        return out
    panels = [(a, b, out[a:b, a:]) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    for x in blocks:
        for a, b, view in panels:
            view.addmm_(x[a:b], x[a:].t())
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        out[b:, a:b] = out[a:b, b:].t()
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
