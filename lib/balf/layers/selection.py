"""Choosing the layers to compress, by module name.

The default candidate set is every module with a registered layer kind
(:func:`balf.register_layer_kind`) plus every other convolution-like module; those that
cannot be factorized are reported with the reason instead of being silently ignored:
a padding mode the kind cannot express, a type without a kind (``nn.Conv3d``,
``nn.ConvTranspose2d``, …), or a child of a module that uses its weights without calling it
(``nn.MultiheadAttention.out_proj``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from torch import nn
from torch.nn.modules.conv import _ConvNd

from balf.errors import BALFError
from balf.layers.dispatch import unsupported_reason
from balf.layers.kind import kind_for

__all__ = ["module_aliases", "resolve_layers", "tied_reason"]

# Containers whose forward reads their children's weights directly (functional calls): the
# children are never called as modules, so no statistics reach them and replacing them breaks
# the container.
_OPAQUE_CONTAINERS: dict[type[nn.Module], str] = {
    nn.MultiheadAttention: (
        "inside nn.MultiheadAttention, whose forward uses the weights through "
        "F.multi_head_attention_forward and never calls this module"
    ),
}
# Module types listed as skipped (with the reason) when they have no kind.
_LOOKS_FACTORIZABLE: tuple[type[nn.Module], ...] = (_ConvNd, nn.Linear, nn.Bilinear)


def _opaque_children(modules: dict[str, nn.Module]) -> dict[str, str]:
    """Names of modules nested in an opaque container, with the reason."""
    out: dict[str, str] = {}
    for name, module in modules.items():
        reason = next((r for t, r in _OPAQUE_CONTAINERS.items() if isinstance(module, t)), None)
        if reason is None:
            continue
        for child, _ in module.named_modules():
            if child:
                out.setdefault(f"{name}.{child}" if name else child, reason)
    return out


def _reason(name: str, module: nn.Module, opaque: dict[str, str]) -> str | None:
    return opaque.get(name) or unsupported_reason(module)


def resolve_layers(
    model: nn.Module, layers: Iterable[str] | None = None
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Split a model's layers into those to factorize and those left untouched.

    Args:
        model: the network.
        layers: module names to factorize; ``None`` means every supported layer.

    Returns:
        ``(targets, skipped)``: supported modules by name (in model order), and the modules left
        untouched with the reason: for the default selection the Conv2d/Linear-like modules that
        cannot be factorized, and always the layers whose weight or bias is shared with another
        module (tied weights: factorizing one user of the tensor would add parameters and break
        the tie). A module registered under several names is one target, under its first name
        (see :func:`module_aliases`).

    Raises:
        BALFError: a requested name does not exist, or names a layer that cannot be factorized.
    """
    modules = dict(model.named_modules())
    opaque = _opaque_children(modules)
    targets: dict[str, nn.Module] = {}
    skipped: dict[str, str] = {}
    if layers is None:
        for name, module in modules.items():
            if kind_for(module) is None and not isinstance(module, _LOOKS_FACTORIZABLE):
                continue
            reason = _reason(name, module, opaque)
            if reason is None:
                targets[name] = module
            else:
                skipped[name] = reason
        return _drop_tied(model, targets, skipped)

    if isinstance(layers, str):
        raise BALFError(f"`layers` must be a list of module names, got the string {layers!r}")
    requested = list(layers)
    if not requested:
        raise BALFError("`layers` is empty: pass None to compress every supported layer")
    for name in requested:
        if name not in modules:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise BALFError(f"unknown layer name {name!r}: the model has no such module.{hint}")
        reason = _reason(name, modules[name], opaque)
        if reason is not None:
            raise BALFError(f"layer {name!r} cannot be factorized: {reason}")
        targets[name] = modules[name]
    order = {name: i for i, name in enumerate(modules)}
    firsts: dict[int, str] = {}
    for name, module in sorted(targets.items(), key=lambda kv: order[kv[0]]):
        firsts.setdefault(id(module), name)  # an aliased module once, under its first name
    targets = {name: targets[name] for name in sorted(firsts.values(), key=order.get)}
    return _drop_tied(model, targets, skipped)


def module_aliases(model: nn.Module) -> dict[str, list[str]]:
    """Every name of each module registered under several names, keyed by its first name.

    Example: after ``self.q = self.p``, ``{"p": ["p", "q"]}`` (and likewise for submodules).
    """
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    return {n[0]: n for n in names.values() if len(n) > 1}


def tied_reason(model: nn.Module, name: str) -> str | None:
    """Why layer ``name`` shares its weight or bias with another module, or ``None``."""
    module = model.get_submodule(name)
    mine = {id(p): key for key, p in module.named_parameters(recurse=False)}
    firsts: dict[int, str] = {}
    for other_name, other in model.named_modules(remove_duplicate=False):
        if other is module or id(other) in firsts:
            continue
        firsts[id(other)] = other_name
        for key, p in other.named_parameters(recurse=False):
            if id(p) in mine:
                return (
                    f"{mine[id(p)]} shared with {other_name}.{key} (tied parameters are kept dense)"
                )
    return None


def _drop_tied(
    model: nn.Module, targets: dict[str, nn.Module], skipped: dict[str, str]
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    owners: dict[int, set[int]] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), set()).add(id(module))
    for name in list(targets):
        if any(len(owners[id(p)]) > 1 for p in targets[name].parameters(recurse=False)):
            skipped[name] = tied_reason(model, name) or "parameters shared with another module"
            del targets[name]
    return targets, skipped
