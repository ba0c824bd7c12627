"""Sharing in saved files: tied parameters and modules registered under several names.

A ``state_dict`` lists a tied parameter once per name, and ``load_state_dict(assign=True)`` gives
each name a Parameter of its own (sharing storage, but counted twice and untied for good by
``.to()``/``.double()``). :func:`tied_tensors` records, at save time, which names hold the *same*
parameter or buffer object; :func:`retie` makes them one object again after loading.
:func:`module_names` gives every name of a module registered under several names, so that a
factorized layer is installed under all of them.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

__all__ = ["module_names", "retie", "tied_tensors"]


def tied_tensors(model: nn.Module) -> dict[str, str]:
    """``{name: first name}`` of every parameter or buffer reachable under several names."""
    tied: dict[str, str] = {}
    for named in (model.named_parameters, model.named_buffers):
        first: dict[int, str] = {}
        for name, tensor in named(remove_duplicate=False):
            if id(tensor) in first:
                tied[name] = first[id(tensor)]
            else:
                first[id(tensor)] = name
    return tied


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    prefix, _, attr = name.rpartition(".")
    return (model.get_submodule(prefix) if prefix else model), attr


def retie(model: nn.Module, tied: Mapping[str, str]) -> None:
    """Make each ``alias`` of ``tied`` the very object its first name holds (in place)."""
    for alias, name in tied.items():
        src_owner, src_attr = _owner(model, name)
        dst_owner, dst_attr = _owner(model, alias)
        if src_attr in src_owner._parameters and dst_attr in dst_owner._parameters:
            dst_owner._parameters[dst_attr] = src_owner._parameters[src_attr]
        elif src_attr in src_owner._buffers and dst_attr in dst_owner._buffers:
            dst_owner._buffers[dst_attr] = src_owner._buffers[src_attr]


def module_names(model: nn.Module) -> dict[int, list[str]]:
    """Every name of each module, keyed by the module's ``id``."""
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    return names
