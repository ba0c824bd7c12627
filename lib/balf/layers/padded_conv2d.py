"""Convs that pad in their own ``forward`` (:mod:`balf.layers.conv_padding`): the input is padded
as the layer pads it, then treated as that of a plain ``nn.Conv2d``; the replacement keeps the
padding. One kind, ``padded_conv2d``, registered for each such conv type."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from balf.layers.conv2d import Conv2dKind
from balf.layers.conv_padding import KNOWN, RULES, TF_SAME, PadSpec, pad_input, pad_spec_of, tf_same
from balf.layers.kind import add_kind_resolver, register_layer_kind
from balf.layers.padded_lowrank import PaddedLowRankConv2d

__all__ = ["PaddedConv2dKind", "register_known", "register_padded_conv"]


class PaddedConv2dKind(Conv2dKind):
    """A ``Conv2dKind`` whose input rows are those of the padded input (its ``dense_type`` is
    set per registered conv type, see :meth:`LayerKind.for_type`)."""

    name = "padded_conv2d"
    lowrank_type = PaddedLowRankConv2d

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
    if not (isinstance(conv_type, type) and issubclass(conv_type, nn.Conv2d)):
        raise TypeError(f"conv_type must be an nn.Conv2d subclass, got {conv_type!r}")
    if isinstance(pad, str):
        if pad != TF_SAME:
            raise ValueError(f"pad must be {TF_SAME!r} or a function, got {pad!r}")
        RULES[conv_type] = tf_same
    else:
        RULES[conv_type] = pad
    register_layer_kind(PaddedConv2dKind().for_type(conv_type))


def register_known(conv_type: type[nn.Module]) -> bool:
    """Register ``conv_type`` if it is one of the known padding-in-forward classes.

    Only modules already imported are looked at (a model holding such a layer has imported it).

    Returns:
        Whether ``conv_type`` now has a padding rule.
    """
    if conv_type in RULES:
        return True
    if not (isinstance(conv_type, type) and issubclass(conv_type, nn.Conv2d)):
        return False
    for module_name, class_name, rule in KNOWN:
        owner = sys.modules.get(module_name)
        if owner is not None and getattr(owner, class_name, None) is conv_type:
            register_padded_conv(conv_type, rule)
            return True
    return False


add_kind_resolver(register_known)  # known classes get their kind on first look-up
