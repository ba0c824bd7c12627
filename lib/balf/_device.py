"""Where a model lives: the device of its first parameter (CPU for a model without any)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["model_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter, or CPU when it has none."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")
