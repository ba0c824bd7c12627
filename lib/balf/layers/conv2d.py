"""``nn.Conv2d`` with any stride, padding (ints, tuples, ``'same'``, ``'valid'``), dilation and
groups, with ``padding_mode='zeros'``."""

from __future__ import annotations

from torch import Tensor, nn

from balf.layers._conv import Conv2dView, ConvKind
from balf.layers.kind import register_layer_kind
from balf.layers.lowrank import LowRankConv2d

__all__ = ["Conv2dKind"]


class Conv2dKind(ConvKind):
    """Rows are the ``B·H_out·W_out`` output positions; ``D = C_in/g·kh·kw``."""

    name = "conv2d"
    dense_type = nn.Conv2d
    lowrank_type = LowRankConv2d

    def view(self, module: nn.Conv2d) -> Conv2dView:
        return Conv2dView(
            module.kernel_size, module.stride, module.padding, module.dilation, module.groups
        )

    def as_4d(self, t: Tensor) -> Tensor:
        return t


register_layer_kind(Conv2dKind())
