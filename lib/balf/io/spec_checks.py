"""Validation of a save spec's entries before they are used (a clear error, not a KeyError)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from torch import nn

from balf.errors import BALFError

__all__ = ["check_aliases", "check_layer_entry", "check_rank", "check_tied"]

_FIX = "the file was damaged or edited: restore it or save the model again"


def check_layer_entry(entry: Any, index: int, error: type[BALFError]) -> None:
    """An entry ``{"name": str, "kind": str, "rank": int >= 1, "dense": dict}``.

    Raises:
        error: naming the entry, what is wrong and the fix.
    """
    label = f"entry {index}" + (
        f" ({entry.get('name')!r})" if isinstance(entry, Mapping) and "name" in entry else ""
    )
    fix = "the file was not written by balf.save or was edited; save the model again"
    if not isinstance(entry, Mapping):
        raise error(f"layer {label} of the spec is {type(entry).__name__}, not an object; {fix}")
    for key, kind in (("name", str), ("kind", str), ("dense", Mapping)):
        if not isinstance(entry.get(key), kind):
            what = "missing" if key not in entry else f"{entry[key]!r}"
            raise error(f"layer {label} of the spec: {key!r} is {what}; {fix}")
    rank = entry.get("rank")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        what = "missing" if "rank" not in entry else f"{rank!r}"
        raise error(f"layer {label} of the spec: 'rank' is {what}, not a positive integer; {fix}")


def check_aliases(
    aliases: Any, available: Mapping[str, Any], source: str, error: type[BALFError]
) -> None:
    """Every alias names a tensor stored in the file.

    Raises:
        error: naming the alias and the missing tensor.
    """
    if not isinstance(aliases, Mapping):
        raise error(f"{source}: the spec's 'aliases' is not an object; save the model again")
    for alias, name in aliases.items():
        if name not in available:
            raise error(
                f"{source}: tensor {alias!r} is stored as an alias of {name!r}, which is not in "
                "the file; the file is damaged or was edited: save the model again"
            )


def check_rank(
    entry: Mapping[str, Any], kind: Any, dense: nn.Module, error: type[BALFError]
) -> None:
    """The entry's rank is at most the dense layer's full rank ``min(D, K)``.

    Checked before the layer is built: a rank of 4e8 for a 64×64 layer would otherwise allocate
    its factors (~100 GB). Kinds without a geometry (registered the balf 0.1 way) are not
    checked.

    Raises:
        error: naming the layer, its rank and its full rank.
    """
    try:
        geo = kind.geometry(dense)
    except NotImplementedError:
        return
    if entry["rank"] > geo.max_rank:
        raise error(
            f"layer {entry['name']!r} of the spec has rank {entry['rank']}, above its full rank "
            f"{geo.max_rank} (min(D, K) of a {geo.kind} layer with D={geo.in_dim}, "
            f"K={geo.out_dim}); {_FIX}"
        )


def check_tied(tied: Any, model: nn.Module, source: str, error: type[BALFError]) -> None:
    """Every pair of the spec's ``tied`` map names two tensors of ``model`` of one shape, both
    parameters or both buffers.

    Raises:
        error: naming the pair, what is wrong and the fix.
    """
    if not isinstance(tied, Mapping):
        raise error(f"{source}: the spec's 'tied' is not an object; {_FIX}")
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    for alias, name in tied.items():
        group = params if alias in params else buffers
        missing = [n for n in (alias, name) if not isinstance(n, str) or n not in group]
        if missing:
            raise error(
                f"{source}: the spec ties {alias!r} to {name!r}, but this model has no "
                f"{'parameter' if group is params else 'parameter or buffer'} {missing[0]!r}; "
                f"{_FIX}"
            )
        if group[alias].shape != group[name].shape:
            raise error(
                f"{source}: the spec ties {alias!r} {tuple(group[alias].shape)} to {name!r} "
                f"{tuple(group[name].shape)}, tensors of different shapes; {_FIX}"
            )
