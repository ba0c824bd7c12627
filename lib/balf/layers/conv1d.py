"""``nn.Conv1d`` (``padding_mode='zeros'``), seen as a 2-D convolution of height 1.

The whole kind is this file: the 2-D view of the hyper-parameters, the ``(B, C, L) → (B, C, 1,
L)`` view of tensors, and the replacement class; the maths is that of every convolution.
"""

from __future__ import annotations

from torch import Tensor, nn

from balf.layers._conv import Conv2dView, ConvKind
from balf.layers.kind import register_layer_kind
from balf.layers.lowrank import LowRankConv1d

__all__ = ["Conv1dKind"]


class Conv1dKind(ConvKind):
    """Rows are the ``B·L_out`` output positions; ``D = C_in/g·k``."""

    name = "conv1d"
    dense_type = nn.Conv1d
    lowrank_type = LowRankConv1d

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


register_layer_kind(Conv1dKind())
