"""Editing the spec of a file written by ``balf.save`` (helpers, not tests).

:func:`edit_spec` rewrites a save's header the way a person or another tool would: the JSON spec
changed in place, the tensors untouched, and optionally the spec's own checksum recomputed (a
consistent file, as a future or foreign writer would produce) or dropped with the library version
set back to 0.1 (a file of balf 0.1, whose spec had no checksum).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from balf.io.checksum import spec_checksum

__all__ = ["as_written_by_0_1", "edit_spec"]


def edit_spec(
    path: Path, edit: Callable[[dict[str, Any]], None], recompute_checksum: bool = False
) -> None:
    """Apply ``edit`` to the spec in ``path``'s header and write the file back.

    Args:
        path: a file written by ``balf.save``.
        edit: changes the spec dict in place.
        recompute_checksum: store the edited spec's own checksum (else the old one stays).
    """
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    spec = json.loads(meta["balf"])
    edit(spec)
    if recompute_checksum and "spec" in spec.get("checksum", {}):
        spec["checksum"]["spec"] = spec_checksum(spec)
    meta["balf"] = json.dumps(spec)
    save_file(load_file(str(path)), str(path), metadata=meta)


def as_written_by_0_1(spec: dict[str, Any]) -> None:
    """An ``edit``: the spec as balf 0.1 wrote it (its version, a checksum of tensors only)."""
    spec["library_version"] = "0.1.0"
    spec["checksum"].pop("spec", None)
