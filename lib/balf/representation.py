"""Layers as batches of matrix products (method §1).

A supported layer computes, before its bias, ``O(I(X) · P(W))``: a batch of ``G`` products of an
``N×D`` input matrix with a ``D×K`` weight matrix. This module knows, per layer type, the geometry
``(G, D, K)``, how to read the weight as ``(G, D, K)`` matrices, and how to turn a layer's input or
output into the ``(G, N, D)`` / ``(G, N, K)`` row matrices the statistics need.

Supported: ``nn.Linear`` (any leading dims) and ``nn.Conv2d`` with any stride, padding (ints,
tuples, ``'same'``, ``'valid'``), dilation and groups, with ``padding_mode='zeros'``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LayerGeometry",
    "geometry_of",
    "input_gram",
    "input_rows",
    "output_gram",
    "output_rows",
    "rows_of_call",
    "unsupported_reason",
    "weight_matrices",
]

# Upper bound on the number of elements of one im2col chunk (float32: 256 MiB).
_IM2COL_CHUNK_ELEMENTS = 1 << 26
# Upper bound on the elements of the per-image Gram matrices summed at once (float32: 64 MiB).
_GRAM_CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class LayerGeometry:
    """Shape of a layer seen as ``G`` products ``(N×D) · (D×K)``.

    Attributes:
        kind: ``"linear"`` or ``"conv2d"``.
        groups: G, number of independent matrix products.
        in_dim: D, inputs per group (``in_features`` or ``C_in/g·kh·kw``).
        out_dim: K, outputs per group (``out_features`` or ``C_out/g``).
    """

    kind: str
    groups: int
    in_dim: int
    out_dim: int

    @property
    def max_rank(self) -> int:
        """R = min(D, K)."""
        return min(self.in_dim, self.out_dim)

    @property
    def dense_params(self) -> int:
        """Weight entries of the dense layer, ``G·D·K`` (bias excluded: it is kept as is)."""
        return self.groups * self.in_dim * self.out_dim

    def lowrank_params(self, rank: int) -> int:
        """Weight entries of the two factor layers at ``rank``, ``G·r·(D+K)``."""
        return self.groups * rank * (self.in_dim + self.out_dim)

    def is_cheaper(self, rank: int) -> bool:
        """Whether ``rank`` costs strictly less than the dense layer (params and MACs alike)."""
        return self.lowrank_params(rank) < self.dense_params

    def preferred_side(self) -> str:
        """The cheaper statistics side: ``"input"`` (D×D Gram, via im2col) only when D < K."""
        return "input" if self.in_dim < self.out_dim else "output"


def unsupported_reason(module: nn.Module) -> str | None:
    """Why ``module`` cannot be factorized, or ``None`` when it can."""
    if isinstance(module, nn.Linear):
        return None
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            return f"Conv2d with padding_mode={module.padding_mode!r} (only 'zeros' is supported)"
        return None
    return f"unsupported layer type {type(module).__name__} (only Conv2d and Linear)"


def geometry_of(module: nn.Module) -> LayerGeometry:
    """The ``(G, D, K)`` geometry of a supported layer.

    Raises:
        TypeError: if the layer is not supported (see :func:`unsupported_reason`).
    """
    reason = unsupported_reason(module)
    if reason is not None:
        raise TypeError(reason)
    if isinstance(module, nn.Linear):
        return LayerGeometry("linear", 1, module.in_features, module.out_features)
    g = module.groups
    kh, kw = module.kernel_size
    return LayerGeometry("conv2d", g, module.in_channels // g * kh * kw, module.out_channels // g)


def weight_matrices(module: nn.Module) -> Tensor:
    """The weight as ``G`` matrices ``W_g`` of shape ``(G, D, K)`` (a view when possible).

    Linear: ``Wᵀ`` with ``G = 1``. Conv2d: group ``g``'s filters, each flattened in
    ``(c, i, j)`` order — the row order of ``F.unfold`` — and transposed.
    """
    geo = geometry_of(module)
    w = module.weight.detach()
    if geo.kind == "linear":
        return w.t().unsqueeze(0)
    return w.reshape(geo.groups, geo.out_dim, geo.in_dim).transpose(1, 2)


def output_rows(module: nn.Module, output: Tensor) -> Tensor:
    """Pre-bias outputs of one call as row matrices ``Y_g``.

    Args:
        output: the layer's output, ``(*, K)`` for Linear, ``(B, C_out, H, W)`` for Conv2d.

    Returns:
        ``(G, N, K)`` with ``N`` = number of output vectors (``B·H·W`` for a conv).
    """
    geo = geometry_of(module)
    if geo.kind == "linear":
        y = output.reshape(1, -1, geo.out_dim)
        if module.bias is not None:
            y = y - module.bias
        return y
    b, _, h, w = output.shape
    y = output
    if module.bias is not None:
        y = y - module.bias.view(1, -1, 1, 1)
    return (
        y.reshape(b, geo.groups, geo.out_dim, h * w)
        .permute(1, 0, 3, 2)
        .reshape(geo.groups, b * h * w, geo.out_dim)
    )


def input_rows(module: nn.Module, x: Tensor) -> Iterator[Tensor]:
    """The input of one call as row matrices ``X_g``, in memory-bounded chunks.

    Args:
        x: the layer's input, ``(*, D)`` for Linear, ``(B, C_in, H, W)`` for Conv2d.

    Yields:
        ``(G, n, D)`` chunks whose rows together are all ``N`` rows of ``X_g`` (for a conv, the
        im2col patches including zero padding, computed a few images at a time).
    """
    geo = geometry_of(module)
    if geo.kind == "linear":
        yield x.reshape(1, -1, geo.in_dim)
        return
    x, padding = _explicit_padding(module, x)
    b = x.shape[0]
    l_out = _output_positions(module, x.shape[-2:], padding)
    per_image = geo.groups * geo.in_dim * l_out
    step = max(1, _IM2COL_CHUNK_ELEMENTS // max(per_image, 1))
    for start in range(0, b, step):
        cols = F.unfold(
            x[start : start + step],
            module.kernel_size,
            dilation=module.dilation,
            padding=padding,
            stride=module.stride,
        )  # (n_img, C_in·kh·kw, L)
        n_img = cols.shape[0]
        yield (
            cols.view(n_img, geo.groups, geo.in_dim, -1)
            .permute(1, 0, 3, 2)
            .reshape(geo.groups, -1, geo.in_dim)
        )


def _explicit_padding(module: nn.Conv2d, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """Resolve ``'same'``/``'valid'`` padding into symmetric ints, pre-padding asymmetric parts."""
    if not isinstance(module.padding, str):
        return x, tuple(module.padding)
    if module.padding == "valid":
        return x, (0, 0)
    # 'same' (stride 1): PyTorch puts the odd extra element on the right/bottom.
    pads = []
    for d, k in zip(reversed(module.dilation), reversed(module.kernel_size), strict=True):
        total = d * (k - 1)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads), (0, 0)


def _output_positions(module: nn.Conv2d, size: torch.Size, padding: tuple[int, int]) -> int:
    """Number of output positions ``H_out·W_out`` of a conv on an input of spatial ``size``."""
    n = 1
    for s, p, d, k, st in zip(
        size, padding, module.dilation, module.kernel_size, module.stride, strict=True
    ):
        n *= (s + 2 * p - d * (k - 1) - 1) // st + 1
    return n


def _gram_2d(rows: Tensor) -> Tensor:
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


def _channel_gram(y: Tensor, groups: int) -> Tensor:
    """``Σ_rows`` Gram of channel vectors of an NCHW tensor, ``(G, S, S)``, without copying it.

    ``y`` is ``(B, G·S, H, W)``; every spatial position of every image is a row. Channels-last
    memory gives the ``(B·H·W, S)`` rows directly; for NCHW memory the per-image ``(S, H·W)``
    blocks are multiplied one image at a time (``G = 1``) or in group batches (``G > 1``).
    """
    b, c, h, w = y.shape
    s = c // groups
    if groups == 1 and y.is_contiguous(memory_format=torch.channels_last) and h * w > 1:
        return _gram_2d(y.permute(0, 2, 3, 1).reshape(-1, c)).unsqueeze(0)
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


@torch.no_grad()
def output_gram(module: nn.Module, output: Tensor, dtype: torch.dtype) -> Tensor:
    """``Y_gᵀ Y_g`` of one call's pre-bias output, ``(G, K, K)`` in ``dtype``.

    Equal to ``output_rows(...).mT @ output_rows(...)`` but avoids the row-matrix copy.
    """
    geo = geometry_of(module)
    y = output.to(dtype)
    if geo.kind == "linear":
        rows = y.reshape(-1, geo.out_dim)
        if module.bias is not None:
            rows = rows - module.bias.to(dtype)
        return _gram_2d(rows).unsqueeze(0)
    if module.bias is not None:
        y = y - module.bias.to(dtype).view(1, -1, 1, 1)
    return _channel_gram(y, geo.groups)


@torch.no_grad()
def input_gram(module: nn.Module, x: Tensor, dtype: torch.dtype) -> Tensor:
    """``X_gᵀ X_g`` of one call's input, ``(G, D, D)`` in ``dtype``.

    1×1 convolutions without padding need no im2col (their patches are the pixels, subsampled
    by the stride); other convolutions go through chunked im2col.
    """
    geo = geometry_of(module)
    x = x.to(dtype)
    if geo.kind == "linear":
        return _gram_2d(x.reshape(-1, geo.in_dim)).unsqueeze(0)
    if module.kernel_size == (1, 1) and module.padding in ((0, 0), "valid"):
        sh, sw = module.stride
        if (sh, sw) != (1, 1):
            x = x[:, :, ::sh, ::sw]
        return _channel_gram(x, geo.groups)
    gram = None
    for rows in input_rows(module, x):
        part = torch.bmm(rows.transpose(1, 2), rows)
        gram = part if gram is None else gram + part
    return gram


def rows_of_call(module: nn.Module, output: Tensor) -> int:
    """Number of rows ``N`` (per group) one call contributes: output vectors."""
    if isinstance(module, nn.Linear):
        return output.numel() // module.out_features
    return output.shape[0] * output.shape[2] * output.shape[3]
