"""The low-rank replacement of a conv that pads its input in ``forward`` (see
:mod:`balf.layers.conv_padding`): the same padding, then the factorized pair of
:class:`LowRankConv2d`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from balf.layers.conv_padding import TF_SAME, PadSpec, pad_input, pad_spec_of
from balf.layers.lowrank import LowRankConv2d

__all__ = ["PaddedLowRankConv2d"]


class PaddedLowRankConv2d(LowRankConv2d):
    """``x → F.pad(x, pads) → LowRankConv2d`` for convs such as timm's ``Conv2dSame``.

    Attributes:
        pad: ``"tf_same"`` (TensorFlow "SAME" padding from each input's size) or fixed
            ``[left, right, top, bottom]``.

    Shape:
        input ``(B, in_channels, H, W)`` → output ``(B, out_channels, H_out, W_out)``, the
        output shape of the dense padded conv.
    """

    pad: PadSpec = TF_SAME

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(pad_input(x, self.pad, self.first))

    @classmethod
    def from_conv(cls, conv: nn.Module, a: Tensor, b: Tensor) -> PaddedLowRankConv2d:
        """Like :meth:`LowRankConv2d.from_conv`, keeping ``conv``'s padding in front."""
        layer = super().from_conv(conv, a, b)
        layer.pad = _spec(conv)
        return layer

    @classmethod
    def dense_spec(cls, dense: nn.Module) -> dict[str, Any]:
        return {**super().dense_spec(dense), "pad": _spec(dense)}

    def spec(self) -> dict[str, Any]:
        out = super().spec()
        out["dense"]["pad"] = self.pad
        return out

    @classmethod
    def from_spec(
        cls,
        spec: dict[str, Any],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> PaddedLowRankConv2d:
        dense = {k: v for k, v in spec["dense"].items() if k != "pad"}
        layer = super().from_spec({**spec, "dense": dense}, device=device, dtype=dtype)
        layer.pad = spec["dense"]["pad"]
        return layer

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad={self.pad!r}"


def _spec(conv: nn.Module) -> PadSpec:
    spec = pad_spec_of(conv)
    if spec is None:
        raise TypeError(f"{type(conv).__name__} has no padding rule (balf.register_padded_conv)")
    return spec
