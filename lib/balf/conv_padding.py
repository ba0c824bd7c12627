"""Convolutions that pad their input in their own ``forward`` (TensorFlow "SAME" ports).

Ports of TensorFlow models (EfficientNet-PyTorch's ``Conv2dStaticSamePadding`` and
``Conv2dDynamicSamePadding``, timm's ``Conv2dSame`` in every ``tf_*`` model) subclass
``nn.Conv2d`` with ``padding=0`` and pad inside ``forward``, often asymmetrically. Such a layer is
"pad, then a plain conv": balf factorizes the conv and keeps the same padding in front of the
factorized pair. A padding rule maps the layer to its *pad spec*:

- ``"tf_same"``: TensorFlow "SAME" padding computed from each input's size (left/top get the
  smaller half), as ``Conv2dSame`` and ``Conv2dDynamicSamePadding`` do;
- ``[left, right, top, bottom]``: fixed amounts, as ``Conv2dStaticSamePadding`` stores them.

Rules are looked up by the layer's type (:func:`register_padded_conv`); the known third-party
classes are registered on first sight, from the modules already imported (nothing is imported).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PadSpec", "TF_SAME", "pad_input", "pad_spec_of", "pads_for", "register_padded_conv"]

PadSpec = list[int] | str
TF_SAME = "tf_same"

_RULES: dict[type[nn.Module], Callable[[nn.Module], PadSpec | None]] = {}


def register_padded_conv(
    conv_type: type[nn.Module], pad: str | Callable[[nn.Module], PadSpec | None]
) -> None:
    """Declare that ``conv_type`` (an ``nn.Conv2d`` subclass) pads its input, then convolves.

    Its ``forward`` must compute exactly ``F.conv2d(F.pad(x, pads), weight, bias, stride,
    padding, dilation, groups)``; balf then factorizes it with the padding kept in front.

    Args:
        conv_type: the subclass.
        pad: ``"tf_same"`` (TensorFlow "SAME" padding from the input size), or a function of
            the layer returning ``[left, right, top, bottom]`` (or ``None`` when this instance
            does not fit the rule, which keeps it dense with the reason).

    Example:
        >>> balf.register_padded_conv(MySameConv, "tf_same")
    """
    from balf.layers import register_layer_adapter
    from balf.layers.padded_conv2d import PaddedConv2dAdapter

    if not (isinstance(conv_type, type) and issubclass(conv_type, nn.Conv2d)):
        raise TypeError(f"conv_type must be an nn.Conv2d subclass, got {conv_type!r}")
    if isinstance(pad, str):
        if pad != TF_SAME:
            raise ValueError(f"pad must be {TF_SAME!r} or a function, got {pad!r}")
        _RULES[conv_type] = _tf_same
    else:
        _RULES[conv_type] = pad
    register_layer_adapter(conv_type, PaddedConv2dAdapter())


def _tf_same(module: nn.Module) -> PadSpec:
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
_KNOWN: tuple[tuple[str, str, Callable[[nn.Module], PadSpec | None]], ...] = (
    ("timm.layers.conv2d_same", "Conv2dSame", _tf_same),
    ("timm.models.layers.conv2d_same", "Conv2dSame", _tf_same),
    ("efficientnet_pytorch.utils", "Conv2dDynamicSamePadding", _tf_same),
    ("efficientnet_pytorch.utils", "Conv2dStaticSamePadding", _static_padding_child),
    ("efficientnet_lite_pytorch.utils", "Conv2dDynamicSamePadding", _tf_same),
    ("efficientnet_lite_pytorch.utils", "Conv2dStaticSamePadding", _static_padding_child),
)


def register_known(conv_type: type[nn.Module]) -> bool:
    """Register ``conv_type`` if it is one of the known padding-in-forward classes.

    Only modules already imported are looked at (a model holding such a layer has imported it).

    Returns:
        Whether ``conv_type`` now has a padding rule.
    """
    if conv_type in _RULES:
        return True
    for module_name, class_name, rule in _KNOWN:
        owner = sys.modules.get(module_name)
        if owner is not None and getattr(owner, class_name, None) is conv_type:
            register_padded_conv(conv_type, rule)
            return True
    return False


def pad_spec_of(module: nn.Module) -> PadSpec | None:
    """The pad spec of a padding-in-forward conv (``None``: no rule, or the rule does not fit)."""
    for cls in type(module).__mro__:
        rule = _RULES.get(cls)
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
