"""Convolutions that pad their input in their own ``forward`` (TensorFlow "SAME" ports).

Ports of TensorFlow models (EfficientNet-PyTorch's ``Conv2dStaticSamePadding`` and
``Conv2dDynamicSamePadding``, timm's ``Conv2dSame`` in every ``tf_*`` model) subclass
``nn.Conv2d`` with ``padding=0`` and pad inside ``forward``, often asymmetrically. Such a layer is
"pad, then a plain conv": balf factorizes the conv and keeps the same padding in front of the
factorized pair. A padding rule maps the layer to its *pad spec*:

- ``"tf_same"``: TensorFlow "SAME" padding computed from each input's size (left/top get the
  smaller half), as ``Conv2dSame`` and ``Conv2dDynamicSamePadding`` do;
- ``[left, right, top, bottom]``: fixed amounts, as ``Conv2dStaticSamePadding`` stores them.

Rules are looked up by the layer's type (:func:`balf.register_padded_conv` declares one); known
third-party classes are registered on first sight, from the modules already imported.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "KNOWN",
    "RULES",
    "TF_SAME",
    "PadSpec",
    "pad_input",
    "pad_spec_of",
    "pads_for",
    "tf_same",
]

PadSpec = list[int] | str
TF_SAME = "tf_same"

RULES: dict[type[nn.Module], Callable[[nn.Module], PadSpec | None]] = {}


def tf_same(module: nn.Module) -> PadSpec:
    return TF_SAME


def _static_padding_child(module: nn.Module) -> PadSpec | None:
    """EfficientNet-PyTorch's ``Conv2dStaticSamePadding``: a ``ZeroPad2d`` (or identity) child."""
    pad = getattr(module, "static_padding", None)
    if isinstance(pad, nn.ZeroPad2d):
        return [int(p) for p in pad.padding]
    if isinstance(pad, nn.Identity):
        return [0, 0, 0, 0]
    # the package's own pass-through class, defined beside the conv
    identity = getattr(sys.modules.get(type(module).__module__), "Identity", None)
    if pad is not None and identity is not None and type(pad) is identity:
        return [0, 0, 0, 0]
    return None


# (module, class, rule) of known third-party classes whose forward is "pad, then F.conv2d".
KNOWN: tuple[tuple[str, str, Callable[[nn.Module], PadSpec | None]], ...] = (
    ("timm.layers.conv2d_same", "Conv2dSame", tf_same),
    ("timm.models.layers.conv2d_same", "Conv2dSame", tf_same),
    ("efficientnet_pytorch.utils", "Conv2dDynamicSamePadding", tf_same),
    ("efficientnet_pytorch.utils", "Conv2dStaticSamePadding", _static_padding_child),
    ("efficientnet_lite_pytorch.utils", "Conv2dDynamicSamePadding", tf_same),
    ("efficientnet_lite_pytorch.utils", "Conv2dStaticSamePadding", _static_padding_child),
)


def pad_spec_of(module: nn.Module) -> PadSpec | None:
    """The pad spec of a padding-in-forward conv (``None``: no rule, or the rule does not fit)."""
    for cls in type(module).__mro__:
        rule = RULES.get(cls)
        if rule is not None:
            return rule(module)
    return None


def pads_for(
    spec: PadSpec,
    size: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` for an input of spatial ``size`` ``(H, W)``."""
    if not isinstance(spec, str):
        return tuple(int(p) for p in spec)
    pads = []
    for s, k, st, d in zip(size, kernel_size, stride, dilation, strict=True):
        total = max((math.ceil(s / st) - 1) * st + (k - 1) * d + 1 - s, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return left, right, top, bottom


def pad_input(x: Tensor, spec: PadSpec, conv: nn.Module) -> Tensor:
    """``x`` ``(B, C, H, W)`` padded as the layer pads it before its convolution."""
    pads = pads_for(spec, x.shape[-2:], conv.kernel_size, conv.stride, conv.dilation)
    return F.pad(x, pads) if any(pads) else x

