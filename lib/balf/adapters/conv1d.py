"""``nn.Conv1d`` (``padding_mode='zeros'``), seen as a 2-D convolution of height 1.

The whole kind is this file: the 2-D view of the hyper-parameters, the ``(B, C, L) → (B, C, 1,
L)`` view of tensors, and the replacement class; the maths is that of every convolution.
"""

from __future__ import annotations

from torch import Tensor, nn

from balf.adapters._conv import Conv2dView, ConvAdapter
from balf.adapters.base import register_layer_adapter
from balf.layers import LowRankConv1d

__all__ = ["Conv1dAdapter"]


class Conv1dAdapter(ConvAdapter):
    """Rows are the ``B·L_out`` output positions; ``D = C_in/g·k``."""

    kind = "conv1d"
    lowrank_class = LowRankConv1d

    def view(self, module: nn.Conv1d) -> Conv2dView:
        padding = module.padding if isinstance(module.padding, str) else (0, *module.padding)
        return Conv2dView(
            (1, *module.kernel_size),
            (1, *module.stride),
            padding,
            (1, *module.dilation),
            module.groups,
        )

    def as_4d(self, t: Tensor) -> Tensor:
        return t.unsqueeze(2)


register_layer_adapter(nn.Conv1d, Conv1dAdapter())
