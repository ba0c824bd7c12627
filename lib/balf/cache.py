"""Opt-in disk cache of statistics (activation-cache/) and decompositions (factorization-cache/).

Keys hash the model's state (every parameter and buffer: statistics depend on all layers up to
the one measured), the calibration data's identity (a caller-given tag and its size), the chosen
layers and the library version. Writes are atomic; loads use ``weights_only=True``; an unreadable
or stale entry is recomputed with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from ._io import atomic_torch_save
from ._version import __version__

__all__ = ["Cache"]

log = logging.getLogger(__name__)

_DIRS = {"statistics": "activation-cache", "decompositions": "factorization-cache"}


class Cache:
    """Where and under which data identity to cache.

    Args:
        root: folder holding ``activation-cache/`` and ``factorization-cache/``.
        data_tag: names the calibration data, e.g. ``"cifar10-train-seed0"``.
        data_size: number of calibration samples (part of the data identity).

    Example:
        >>> cache = balf.Cache(".", data_tag="imagenet-calib-seed0", data_size=8192)
        >>> compressor = balf.Compressor(model, loader, cache=cache)
    """

    def __init__(self, root: str | Path = ".", data_tag: str = "", data_size: int | None = None):
        self.root = Path(root)
        self.data_tag = data_tag
        self.data_size = data_size

    def key(self, kind: str, **fields: Any) -> str:
        """A hex key from ``kind``, the data identity, the library version and ``fields``."""
        payload = {
            "kind": kind,
            "data_tag": self.data_tag,
            "data_size": self.data_size,
            "version": __version__,
            **fields,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

    def path(self, kind: str, key: str) -> Path:
        return self.root / _DIRS[kind] / f"{key}.pt"

    def load(self, kind: str, key: str) -> dict | None:
        """The cached state for ``key``, or ``None`` on a miss, a corrupt or a stale entry."""
        path = self.path(kind, key)
        if not path.exists():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unreadable file is recomputed
            warnings.warn(
                f"corrupt cache entry {path} ({exc.__class__.__name__}); recomputing", stacklevel=2
            )
            return None
        meta = entry.get("meta", {}) if isinstance(entry, dict) else {}
        if meta.get("key") != key or meta.get("version") != __version__ or meta.get("kind") != kind:
            warnings.warn(
                f"stale cache entry {path} (written for {meta}); recomputing", stacklevel=2
            )
            return None
        log.info("cache hit: %s", path)
        return entry["state"]

    def save(self, kind: str, key: str, state: dict) -> Path:
        """Store ``state`` atomically under ``key``; returns the file path."""
        path = self.path(kind, key)
        meta = {"key": key, "version": __version__, "kind": kind}
        atomic_torch_save({"meta": meta, "state": state}, path)
        return path
