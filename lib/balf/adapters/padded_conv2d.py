"""Convs that pad in their own ``forward`` (:mod:`balf.layers.conv_padding`): the input is padded as the
layer pads it, then treated as that of a plain ``nn.Conv2d``; the replacement keeps the padding."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from balf.layers.conv_padding import pad_input, pad_spec_of
from balf.layers.padded_lowrank import PaddedLowRankConv2d
from balf.layers.conv2d import Conv2dAdapter

__all__ = ["PaddedConv2dAdapter"]


class PaddedConv2dAdapter(Conv2dAdapter):
    """A ``Conv2dAdapter`` whose input rows are those of the padded input."""

    kind = "conv2d"
    lowrank_class = PaddedLowRankConv2d

    def unsupported_reason(self, module: nn.Module) -> str | None:
        if pad_spec_of(module) is None:
            return (
                f"{type(module).__name__}: its padding rule does not recognise this instance "
                "(see balf.register_padded_conv)"
            )
        return super().unsupported_reason(module)

    def input_rows(self, module: nn.Module, x: Tensor) -> Iterator[Tensor]:
        return super().input_rows(module, pad_input(x, pad_spec_of(module), module))

    def input_gram(self, module: nn.Module, x: Tensor, dtype: torch.dtype) -> Tensor:
        return super().input_gram(module, pad_input(x, pad_spec_of(module), module), dtype)
