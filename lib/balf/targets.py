"""Choosing the layers to compress, by module name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from torch import nn

from .errors import BALFError
from .representation import unsupported_reason

__all__ = ["resolve_layers"]


def resolve_layers(
    model: nn.Module, layers: Iterable[str] | None = None
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Split a model's layers into those to factorize and those left untouched.

    Args:
        model: the network.
        layers: module names to factorize; ``None`` means every ``Conv2d`` and ``Linear``.

    Returns:
        ``(targets, skipped)``: supported modules by name (in model order), and for the
        default selection the Conv2d/Linear-like modules that cannot be factorized, with the reason.

    Raises:
        BALFError: a requested name does not exist, or names a layer that cannot be factorized.
    """
    modules = dict(model.named_modules())
    targets: dict[str, nn.Module] = {}
    skipped: dict[str, str] = {}
    if layers is None:
        for name, module in modules.items():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                reason = unsupported_reason(module)
                if reason is None:
                    targets[name] = module
                else:
                    skipped[name] = reason
        return targets, skipped

    if isinstance(layers, str):
        raise BALFError(f"`layers` must be a list of module names, got the string {layers!r}")
    requested = list(layers)
    if not requested:
        raise BALFError("`layers` is empty: pass None to compress every Conv2d and Linear layer")
    for name in requested:
        if name not in modules:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise BALFError(f"unknown layer name {name!r}: the model has no such module.{hint}")
        reason = unsupported_reason(modules[name])
        if reason is not None:
            raise BALFError(f"layer {name!r} cannot be factorized: {reason}")
        targets[name] = modules[name]
    order = {name: i for i, name in enumerate(modules)}
    targets = dict(sorted(targets.items(), key=lambda kv: order[kv[0]]))
    return targets, skipped
