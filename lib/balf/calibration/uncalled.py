"""Layers the forward pass never calls: why, so they are skipped with a reason, not an abort.

A chosen layer whose forward hook never fires gets no statistics and cannot be factorized
usefully. Two cases, told apart by one extra forward pass on the example input under a
``TorchDispatchMode`` that records the storage of every tensor an operator reads:

* the forward reads the layer's weight directly (``F.linear(x, self.qkv.weight)`` in
  torchvision's Swin, a packed attention kernel): replacing the module would change nothing
  or break the model;
* the weight is not read at all (GoogLeNet's auxiliary heads in eval mode, an unused branch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["FUNCTIONAL_REASON", "UNUSED_REASON", "uncalled_reasons"]

FUNCTIONAL_REASON = (
    "never called as a module during calibration: the forward pass uses its weight directly "
    "(a functional call such as F.linear(x, layer.weight)), so a factorized module would not "
    "be used"
)
UNUSED_REASON = (
    "never called during calibration: this forward pass does not use it (e.g. an auxiliary "
    "head in eval mode or an unused branch)"
)


class _StoragesRead(TorchDispatchMode):
    """Records the data pointers of every tensor argument of every operator."""

    def __init__(self) -> None:
        super().__init__()
        self.pointers: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for leaf in tree_flatten((args, kwargs or {}))[0]:
            if isinstance(leaf, Tensor) and not leaf.is_meta and not leaf.is_nested:
                self.pointers.add(leaf.untyped_storage().data_ptr())
        return func(*args, **(kwargs or {}))


def uncalled_reasons(
    modules: Mapping[str, nn.Module], run: Callable[[], Any] | None
) -> dict[str, str]:
    """Why each of ``modules`` (never called) was not called.

    Args:
        modules: the uncalled layers by name.
        run: one forward pass of the model on an example (``None``: no example, every layer
            gets the generic reason).

    Returns:
        ``{name: reason}``: :data:`FUNCTIONAL_REASON` when an operator read the layer's weight,
        else :data:`UNUSED_REASON`.
    """
    if not modules:
        return {}
    seen: set[int] = set()
    if run is not None:
        with torch.no_grad(), _StoragesRead() as mode:
            run()
        seen = mode.pointers
    out = {}
    for name, module in modules.items():
        weight = getattr(module, "weight", None)
        used = isinstance(weight, Tensor) and weight.untyped_storage().data_ptr() in seen
        out[name] = FUNCTIONAL_REASON if used else UNUSED_REASON
    return out
