"""The checksums of a saved model, stored in the file's spec and verified on load.

Two digests under the spec's ``"checksum"``: ``"tensors"`` covers every tensor's name, dtype,
shape and bytes; ``"spec"`` covers the rest of the spec itself (layers, ranks, ``tied`` and
``aliases`` maps, versions), so an edited header is refused rather than silently changing the
loaded model. Files of balf 0.1 carry only the tensor digest and are verified on it alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from balf.errors import BALFError
from balf.io.hashing import update_with_tensor

__all__ = [
    "ALGORITHM",
    "CorruptSaveError",
    "spec_checksum",
    "tensors_checksum",
    "verify_checksum",
    "verify_spec_checksum",
]

ALGORITHM = "blake2b-128"


class CorruptSaveError(BALFError):
    """A saved file's tensor data does not match the checksum written with it."""


def tensors_checksum(tensors: Mapping[str, Tensor]) -> str:
    """Digest of every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        h.update(name.encode())
        update_with_tensor(h, tensors[name])
    return h.hexdigest()


def spec_checksum(spec: Mapping[str, Any]) -> str:
    """Digest of the spec without its ``"checksum"`` entry, as canonical JSON (sorted keys):
    the same for the dict :func:`balf.save` writes and the one read back from the file."""
    body = {k: v for k, v in spec.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _written_since_0_2(spec: Mapping[str, Any]) -> bool:
    version = str(spec.get("library_version", ""))
    try:
        return tuple(int(p) for p in version.split(".")[:2]) >= (0, 2)
    except ValueError:
        return True  # an unreadable version is no excuse for a missing digest


def verify_spec_checksum(spec: Mapping[str, Any], source: str) -> None:
    """Compare the spec read from ``source`` with the digest stored in it.

    Files written before the spec was covered (balf 0.1: no ``"spec"`` digest) are not checked.

    Raises:
        CorruptSaveError: the spec was edited or damaged (names the file and the fix).
    """
    stored = spec.get("checksum")
    if stored is None:
        return
    if not isinstance(stored, Mapping) or stored.get("algorithm") != ALGORITHM:
        raise CorruptSaveError(
            f"{source}: unknown checksum entry {stored!r} in its spec; save the model again"
        )
    if "spec" not in stored:
        if _written_since_0_2(spec):
            raise CorruptSaveError(
                f"{source}: its spec has no checksum of its own although balf "
                f"{spec.get('library_version')} wrote one; the header was edited: restore the "
                "file or save the model again"
            )
        return
    actual = spec_checksum(spec)
    if actual != stored["spec"]:
        raise CorruptSaveError(
            f"{source}: its spec (layers, ranks, tied or aliased tensors) does not match the "
            f"checksum stored when it was saved ({actual} != {stored['spec']}): the header was "
            "edited or damaged; restore the file or save the model again"
        )


def verify_checksum(spec: Mapping, tensors: Mapping[str, Tensor], path: Path) -> None:
    """Compare the tensors read from ``path`` with the checksum in its spec.

    Files written before checksums were stored (no ``"checksum"`` entry) are not verified.

    Raises:
        CorruptSaveError: the data differs (names the file and the fix).
    """
    stored = spec.get("checksum")
    if stored is None:
        return
    if not isinstance(stored, Mapping) or stored.get("algorithm") != ALGORITHM:
        raise CorruptSaveError(
            f"{path}: unknown checksum entry {stored!r} in its spec; save the model again"
        )
    actual = tensors_checksum(tensors)
    if actual != stored.get("tensors"):
        raise CorruptSaveError(
            f"{path} is corrupt: its tensor data does not match the checksum stored when it was "
            f"saved ({actual} != {stored.get('tensors')}); restore the file or save the model again"
        )
