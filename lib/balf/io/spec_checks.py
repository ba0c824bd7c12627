"""Validation of a save spec's entries before they are used (a clear error, not a KeyError)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from balf.errors import BALFError

__all__ = ["check_aliases", "check_layer_entry"]


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
