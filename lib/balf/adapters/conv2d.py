"""``nn.Conv2d`` with any stride, padding (ints, tuples, ``'same'``, ``'valid'``), dilation and
groups, with ``padding_mode='zeros'``."""

from __future__ import annotations

from torch import Tensor, nn

from balf.adapters._conv import Conv2dView, ConvAdapter
from balf.adapters.base import register_layer_adapter
from balf.layers import LowRankConv2d

__all__ = ["Conv2dAdapter"]


class Conv2dAdapter(ConvAdapter):
    """Rows are the ``B·H_out·W_out`` output positions; ``D = C_in/g·kh·kw``."""

    kind = "conv2d"
    lowrank_class = LowRankConv2d

    def view(self, module: nn.Conv2d) -> Conv2dView:
        return Conv2dView(
            module.kernel_size, module.stride, module.padding, module.dilation, module.groups
        )

    def as_4d(self, t: Tensor) -> Tensor:
        return t


register_layer_adapter(nn.Conv2d, Conv2dAdapter())
