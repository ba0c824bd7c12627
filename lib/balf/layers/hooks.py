"""Module hooks of a dense layer carried over to its factorized replacement.

Forward pre-hooks, forward hooks and backward hooks that a user registered on a layer are part of
what the layer computes (statistics are collected through its pre-hooks); a replacement that
dropped them would change the model's outputs silently. They are registered on the replacement in
the same order, with the same flags (``with_kwargs``, ``always_call``), and called with the
replacement as their ``module``. The hooks by which torch implements a weight reparametrisation
(``spectral_norm``, ``weight_norm``, ``prune``) are not carried over: they compute the dense
weight, which the factors already hold as it was at compression time.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.prune import BasePruningMethod
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

__all__ = ["transfer_hooks"]

_BAKED_IN = (SpectralNorm, WeightNorm, BasePruningMethod)
_DICTS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")
_FLAG_SETS = (
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def transfer_hooks(dense: nn.Module, small: nn.Module) -> int:
    """Register ``dense``'s forward/backward hooks on ``small`` (in order, flags kept).

    Returns:
        The number of hooks carried over (weight reparametrisation hooks are left out).
    """
    moved = 0
    for attr in _DICTS:
        target = getattr(small, attr)
        for key, hook in getattr(dense, attr).items():
            if isinstance(hook, _BAKED_IN):
                continue
            target[key] = hook
            moved += 1
            for flags in _FLAG_SETS:
                if key in getattr(dense, flags):
                    getattr(small, flags)[key] = True
    if dense._backward_hooks or dense._backward_pre_hooks:
        small._is_full_backward_hook = dense._is_full_backward_hook
    return moved
