"""The output-shape check of each factorized layer against its dense layer (on calibration input).

A factorized layer must map the dense layer's input to an output of the dense layer's shape. A
layer whose behaviour balf misread (e.g. a conv that pads in its own ``forward``) would give
smaller maps, and a network with global pooling would still produce logits of the right shape —
so the check is per layer, when the layer is built, on the shapes the dense layer saw on the
first calibration sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from balf._eval_mode import eval_mode
from balf.counting.flops import count_flops
from balf.errors import BALFError

__all__ = ["LayerShapeError", "check_output_shape", "layer_shapes"]

Shapes = tuple[tuple[int, ...], tuple[int, ...]]


class LayerShapeError(BALFError):
    """A factorized layer's output shape differs from its dense layer's."""


def layer_shapes(
    model: nn.Module,
    targets: Mapping[str, nn.Module],
    example: Any,
    kwargs: dict,
    forward: Callable[[nn.Module, Any], Any] | None,
) -> tuple[dict[str, Shapes], int]:
    """``{name: (input shape, output shape)}`` of each target's first call on one example, and
    the model's FLOPs on it (:func:`balf.count_flops`: the shapes come from that pass).

    Layers whose first positional input or output is not a tensor are left out. The model runs
    in eval mode without grad (its flags are restored).
    """
    shapes: dict[str, Shapes] = {}

    def hook(name):
        def record(module, args, output):
            if name in shapes or not args:
                return
            if isinstance(args[0], Tensor) and isinstance(output, Tensor):
                shapes[name] = (tuple(args[0].shape), tuple(output.shape))

        return record

    handles = [m.register_forward_hook(hook(n), prepend=True) for n, m in targets.items()]
    try:
        flops = count_flops(model, example, kwargs, forward=forward)
    finally:
        for h in handles:
            h.remove()
    return shapes, flops


def check_output_shape(name: str, dense: nn.Module, small: nn.Module, shapes: Shapes) -> None:
    """Run ``small`` on a zero input of the dense layer's input shape and compare output shapes.

    Raises:
        LayerShapeError: the shapes differ (names the layer, both shapes and the fix).
    """
    in_shape, out_shape = shapes
    weight = next(small.parameters())
    x = torch.zeros(in_shape, device=weight.device, dtype=weight.dtype)
    with eval_mode(small):
        got = tuple(small(x).shape)
    if got != out_shape:
        raise LayerShapeError(
            f"layer {name!r} ({type(dense).__name__}): its factorized replacement outputs shape "
            f"{got} but the dense layer outputs {out_shape} on input {in_shape}, so balf misreads "
            "what this layer computes. Leave it out (exclude=[...]) or register a layer kind for "
            "its type (balf.register_layer_kind)"
        )
