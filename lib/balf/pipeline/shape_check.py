"""Checks that each factorized layer computes what its dense layer computes (on calibration input).

A factorized layer must map the dense layer's input to an output of the dense layer's shape. A
layer whose behaviour balf misread (e.g. a conv that pads in its own ``forward``) would give
smaller maps, and a network with global pooling would still produce logits of the right shape —
so the check is per layer, when the layer is built, on the shapes the dense layer saw on the
first calibration sample (:func:`check_output_shape`).

A misread that keeps the shapes (a :func:`balf.register_padded_conv` rule returning the padding
in the wrong order) is caught by the values (:func:`value_errors`): before anything is
installed, the low-rank module the layer's kind builds from an *exact* factorization of its
weight (``W = I·W`` or ``W·I``, rank ``min(D, K)``) runs on the input the dense layer saw on the
first calibration sample, and must give the dense layer's output there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from balf._eval_mode import eval_mode
from balf.counting.flops import count_flops
from balf.errors import BALFError
from balf.layers.dispatch import kind_of, weight_matrices

__all__ = ["LayerShapeError", "check_output_shape", "layer_shapes", "value_errors"]

Shapes = tuple[tuple[int, ...], tuple[int, ...]]


class LayerShapeError(BALFError):
    """A factorized layer's output shape (or values) differs from its dense layer's."""


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


def _tolerance(dtype: torch.dtype) -> float:
    """Relative error an exact factorization may show in ``dtype`` (rounding only)."""
    return 1e-3 if dtype in (torch.float32, torch.float64) else 5e-2


@torch.no_grad()
def _exact_probe(module: nn.Module) -> nn.Module:
    """The kind's low-rank module from the exact factors ``(I, W)`` or ``(W, I)`` of the
    layer's weight ``W`` ``(G, D, K)`` (rank ``min(D, K)``: the smaller identity)."""
    w = weight_matrices(module).detach()
    g, d, k = w.shape
    eye = torch.eye(min(d, k), dtype=w.dtype, device=w.device).expand(g, -1, -1).contiguous()
    a, b = (eye, w) if d <= k else (w, eye)
    return kind_of(module).replace(module, a, b)


def value_errors(
    model: nn.Module,
    targets: Mapping[str, nn.Module],
    example: Any,
    kwargs: dict,
    forward: Callable[[nn.Module, Any], Any] | None,
) -> dict[str, str]:
    """``{name: message}`` of the layers whose kind's low-rank module does not compute what the
    layer computes on its first call on the example (module docstring); one forward pass.

    Layers whose first positional input or output is not a tensor are not checked.
    """
    errors: dict[str, str] = {}
    seen: set[str] = set()

    def hook(name):
        def check(module, args, output):
            if name in seen or not args:
                return
            seen.add(name)
            if not (isinstance(args[0], Tensor) and isinstance(output, Tensor)):
                return
            with eval_mode(module):
                got = _exact_probe(module)(args[0])
            if got.shape != output.shape:
                return  # the shape check names it, with the shapes
            ref = output.double()
            err = float((got.double() - ref).norm() / ref.norm().clamp_min(1e-30))
            if err > _tolerance(output.dtype):
                errors[name] = (
                    f"layer {name!r} ({type(module).__name__}): the low-rank module balf builds "
                    f"for it does not compute what the layer computes: even with exact factors "
                    f"its output differs by a relative error of {err:.3g} on the first "
                    "calibration sample, so balf misreads this layer (e.g. a "
                    "balf.register_padded_conv rule must return the padding as [left, right, "
                    "top, bottom]). Fix its padding rule or layer kind, or leave it out "
                    "(exclude=[...])"
                )

        return check

    handles = [m.register_forward_hook(hook(n), prepend=True) for n, m in targets.items()]
    try:
        count_flops(model, example, kwargs, forward=forward)
    finally:
        for h in handles:
            h.remove()
    return errors
