"""The checksum of a saved model's tensors, stored in the file's spec and verified on load."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from balf.errors import BALFError
from balf.io.hashing import update_with_tensor

__all__ = ["ALGORITHM", "CorruptSaveError", "tensors_checksum", "verify_checksum"]

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
