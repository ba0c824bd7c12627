"""Shared maths of zero-padded convolutions, computed on a 2-D view of the layer.

A convolution with ``g`` groups is ``g`` products of its im2col patch matrix (zero padding
included) with the group's flattened filters: ``D = C_in/g·∏kernel``, ``K = C_out/g``. A
:class:`ConvKind` subclass only says how its layer reads as a 2-D convolution
(:meth:`ConvKind.view`, :meth:`ConvKind.as_4d`) and which low-rank class replaces it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from balf.layers._grams import channel_gram
from balf.layers.geometry import LayerGeometry
from balf.layers.kind import LayerKind

__all__ = ["ConvKind", "Conv2dView"]

# Upper bound on the number of elements of one im2col chunk (float32: 256 MiB).
_IM2COL_CHUNK_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class Conv2dView:
    """A convolution's hyper-parameters as those of an equivalent ``nn.Conv2d``."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] | str
    dilation: tuple[int, int]
    groups: int


class ConvKind(LayerKind):
    """Kind of a ``padding_mode='zeros'`` convolution whose 2-D view is :meth:`view`; its
    ``lowrank_type`` has a ``from_conv(conv, a, b)`` classmethod."""

    def view(self, module: nn.Module) -> Conv2dView:
        """The layer's hyper-parameters as a 2-D convolution."""
        raise NotImplementedError

    def as_4d(self, t: Tensor) -> Tensor:
        """An input or output of the layer as the ``(B, C, H, W)`` tensor of the 2-D view."""
        raise NotImplementedError

    def unsupported_reason(self, module: nn.Module) -> str | None:
        if module.padding_mode != "zeros":
            return (
                f"{type(module).__name__} with padding_mode={module.padding_mode!r} "
                "(only 'zeros' is supported)"
            )
        return None

    def geometry(self, module: nn.Module) -> LayerGeometry:
        g = module.groups
        d = module.in_channels // g * math.prod(module.kernel_size)
        return LayerGeometry(self.name, g, d, module.out_channels // g)

    def weight_matrices(self, module: nn.Module) -> Tensor:
        """Group ``g``'s filters, each flattened in ``(c, *kernel)`` order (that of
        ``F.unfold``) and transposed: ``(G, D, K)``."""
        geo = self.geometry(module)
        w = self.weight(module).detach()
        return w.reshape(geo.groups, geo.out_dim, geo.in_dim).transpose(1, 2)

    def output_rows(self, module: nn.Module, output: Tensor) -> Tensor:
        """``(G, B·H·W, K)`` pre-bias output rows."""
        geo = self.geometry(module)
        y = self.as_4d(output)
        b, _, h, w = y.shape
        if module.bias is not None:
            y = y - module.bias.view(1, -1, 1, 1)
        return (
            y.reshape(b, geo.groups, geo.out_dim, h * w)
            .permute(1, 0, 3, 2)
            .reshape(geo.groups, b * h * w, geo.out_dim)
        )

    def input_rows(self, module: nn.Module, x: Tensor) -> Iterator[Tensor]:
        """im2col patches (zero padding included), computed a few images at a time."""
        return _im2col_rows(self.view(module), self.geometry(module), self.as_4d(x))

    def output_gram(self, module: nn.Module, output: Tensor, dtype: torch.dtype) -> Tensor:
        y = self.as_4d(output).to(dtype)
        if module.bias is not None:
            y = y - module.bias.to(dtype).view(1, -1, 1, 1)
        return channel_gram(y, module.groups)

    def input_gram(self, module: nn.Module, x: Tensor, dtype: torch.dtype) -> Tensor:
        """1×1 convolutions without padding need no im2col (their patches are the pixels,
        subsampled by the stride); other convolutions go through chunked im2col."""
        view = self.view(module)
        x = self.as_4d(x).to(dtype)
        if view.kernel_size == (1, 1) and view.padding in ((0, 0), "valid"):
            sh, sw = view.stride
            if (sh, sw) != (1, 1):
                x = x[:, :, ::sh, ::sw]
            return channel_gram(x, view.groups)
        gram = None
        for rows in _im2col_rows(view, self.geometry(module), x):
            part = torch.bmm(rows.transpose(1, 2), rows)
            gram = part if gram is None else gram + part
        return gram

    def build(self, module: nn.Module, a: Tensor, b: Tensor) -> nn.Module:
        return self.lowrank_type.from_conv(module, a, b)


def _im2col_rows(view: Conv2dView, geo: LayerGeometry, x: Tensor) -> Iterator[Tensor]:
    """``(G, n, D)`` im2col chunks of a ``(B, C_in, H, W)`` input, bounded in memory."""
    x, padding = _explicit_padding(view, x)
    b = x.shape[0]
    l_out = _output_positions(view, x.shape[-2:], padding)
    per_image = geo.groups * geo.in_dim * l_out
    step = max(1, _IM2COL_CHUNK_ELEMENTS // max(per_image, 1))
    for start in range(0, b, step):
        cols = F.unfold(
            x[start : start + step],
            view.kernel_size,
            dilation=view.dilation,
            padding=padding,
            stride=view.stride,
        )  # (n_img, C_in·kh·kw, L)
        n_img = cols.shape[0]
        yield (
            cols.view(n_img, geo.groups, geo.in_dim, -1)
            .permute(1, 0, 3, 2)
            .reshape(geo.groups, -1, geo.in_dim)
        )


def _explicit_padding(view: Conv2dView, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """Resolve ``'same'``/``'valid'`` padding into symmetric ints, pre-padding asymmetric parts."""
    if not isinstance(view.padding, str):
        return x, tuple(view.padding)
    if view.padding == "valid":
        return x, (0, 0)
    # 'same' (stride 1): PyTorch puts the odd extra element on the right/bottom.
    pads = []
    for d, k in zip(reversed(view.dilation), reversed(view.kernel_size), strict=True):
        total = d * (k - 1)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads), (0, 0)


def _output_positions(view: Conv2dView, size: torch.Size, padding: tuple[int, int]) -> int:
    """Number of output positions ``H_out·W_out`` of the conv on an input of spatial ``size``."""
    n = 1
    for s, p, d, k, st in zip(
        size, padding, view.dilation, view.kernel_size, view.stride, strict=True
    ):
        n *= (s + 2 * p - d * (k - 1) - 1) // st + 1
    return n
