"""Whole-model FLOP and parameter counts (FLOPs via ``torch.utils.flop_counter``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ._mode import eval_mode

__all__ = ["count_flops", "count_params"]


def count_flops(model: nn.Module, example_input: Tensor | tuple) -> int:
    """FLOPs of one forward pass (a multiply-add counts 2), in eval mode without grad.

    Args:
        model: the network.
        example_input: a batch, e.g. ``(1, 3, 224, 224)``, or a tuple of positional inputs;
            moved to the model's device.

    Returns:
        Total FLOPs counted by :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls,
        convolutions, attention); the model's train/eval mode is restored afterwards.

    Example:
        >>> balf.count_flops(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224))
        3628146688
    """
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    inputs = tuple(x.to(device) if isinstance(x, Tensor) else x for x in inputs)
    with eval_mode(model), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return int(counter.get_total_flops())


def count_params(model: nn.Module) -> int:
    """Number of parameter entries (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())
