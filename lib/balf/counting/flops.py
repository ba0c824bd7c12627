"""Whole-model FLOP and parameter counts (FLOPs via ``torch.utils.flop_counter``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from balf._device import model_device
from balf._eval_mode import eval_mode
from balf.counting.attention import attention_flop_formulas

__all__ = ["count_flops", "count_params"]


def count_flops(
    model: nn.Module,
    example_input: Any,
    kwargs: dict[str, Any] | None = None,
    *,
    forward: Callable[[nn.Module, Any], Any] | None = None,
) -> int:
    """FLOPs of one forward pass (a multiply-add counts 2), in eval mode without grad.

    Args:
        model: the network.
        example_input: a batch, e.g. ``(1, 3, 224, 224)``, a tuple of positional inputs, or
            a mapping of keyword inputs (a dict, a tokenizer's ``BatchEncoding``); moved to
            the model's device.
        kwargs: keyword inputs of the call.
        forward: ``forward(model, example_input)`` runs the model on a batch of another
            structure (see :func:`balf.collect_statistics`).

    Returns:
        Total FLOPs counted by :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls,
        convolutions, attention); fused attention kernels (``F.scaled_dot_product_attention``,
        ``nn.MultiheadAttention``'s fast path, ...) count as the math they do (see
        :mod:`balf.counting.attention`). The model's train/eval mode is restored afterwards.

    Example:
        >>> balf.count_flops(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224))
        3628146688
    """
    device = model_device(model)
    if forward is None and isinstance(example_input, Mapping) and not kwargs:
        example_input, kwargs = (), example_input  # keyword inputs (a dict, a BatchEncoding)
    if forward is None:
        inputs = example_input if isinstance(example_input, tuple) else (example_input,)
        inputs = _to_device(inputs, device)
        kwargs = _to_device(dict(kwargs or {}), device)

        def forward(m, _):
            return m(*inputs, **kwargs)
    else:
        example_input = _to_device(example_input, device)
    with (
        eval_mode(model),
        FlopCounterMode(display=False, custom_mapping=attention_flop_formulas()) as counter,
    ):
        forward(model, example_input)
    return int(counter.get_total_flops())


def count_params(model: nn.Module) -> int:
    """Number of parameter entries (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj
