"""Opt-in disk cache of statistics (activation-cache/) and decompositions (factorization-cache/).

The folder and its entries live here; :mod:`balf.pipeline.cached` computes the keys and runs
the cached phases (load, or compute and store).

Every key is derived from content, never from a name the caller chooses:

* **statistics**: the model's fingerprint (:func:`balf.io.hashing.model_fingerprint`: module
  classes and their source code, hyper-parameters, every parameter and buffer, shared tensors),
  the chosen layers and side, and a fingerprint of the calibration data — a digest of the
  whole tensor for tensor data; for an iterable, a digest of its first batch (every tensor in
  it), its length and its dataset's length when it has them, ``max_batches`` and the
  ``forward`` callable's source;
* **decompositions**: the fingerprint of the chosen layers and a digest of the statistics
  they are computed from (the Gram matrices and row counts), so given :class:`Statistics` and
  collected ones key alike and different statistics never share decompositions;
* both: the library version.

The cache's ``data_tag``/``data_size`` are labels only, stored with each entry. Each entry holds
a checksum of its payload, verified on load; writes are atomic; loads use ``weights_only=True``;
an unreadable, stale or corrupt entry is recomputed with a warning. Temporary files left by a
killed write are removed by the next run that uses the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from balf._version import __version__
from balf.io.atomic import atomic_torch_save
from balf.io.hashing import object_digest
from balf.io.orphans import remove_orphans

__all__ = ["Cache"]

log = logging.getLogger(__name__)

_DIRS = {
    "statistics": "activation-cache",
    "decompositions": "factorization-cache",
    # measured sensitivity weights (balf.pipeline.sensitivity): depend on the model and the data
    "sensitivities": "activation-cache",
}
# temporary files of balf.io.atomic writes: .<name>.pid<PID>@<host>.<random>.tmp


class Cache:
    """Where to cache; keys come from the content (model, calibration data, statistics).

    Args:
        root: folder holding ``activation-cache/`` and ``factorization-cache/``.
        data_tag: a label for the calibration data, stored with each entry (not part of the key).
        data_size: number of calibration samples, stored as a label as well.

    Example:
        >>> cache = balf.Cache(".", data_tag="imagenet-calib-seed0")
        >>> compressor = balf.Compressor(model, loader, cache=cache)
    """

    def __init__(
        self, root: str | Path = ".", data_tag: str | None = None, data_size: int | None = None
    ):
        self.root = Path(root)
        self.data_tag = data_tag
        self.data_size = data_size
        self._cleaned: set[str] = set()

    def key(self, kind: str, **fields: Any) -> str:
        """A hex key from ``kind``, the library version and the content ``fields``."""
        payload = {"kind": kind, "version": __version__, **fields}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

    def path(self, kind: str, key: str) -> Path:
        return self.root / _DIRS[kind] / f"{key}.pt"

    def load(self, kind: str, key: str) -> dict | None:
        """The cached state for ``key``, or ``None`` on a miss, a corrupt or a stale entry."""
        self.remove_orphans(kind)
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
        state = entry.get("state")
        if meta.get("checksum") != object_digest(state):
            warnings.warn(
                f"corrupt cache entry {path}: its checksum does not match its contents; "
                "recomputing",
                stacklevel=2,
            )
            return None
        log.info("cache hit: %s", path)
        return state

    def save(self, kind: str, key: str, state: dict) -> Path | None:
        """Store ``state`` atomically under ``key``; returns the file path.

        A write that fails (a full disk, a read-only or vanished folder) warns and returns
        ``None``: the cache is an optimisation, the computation goes on without it (nothing
        half-written is left behind).
        """
        try:
            return self._save(kind, key, state)
        except OSError as exc:
            warnings.warn(
                f"could not write the {kind} cache entry under {self.root} "
                f"({type(exc).__name__}: {exc}); going on without caching it",
                stacklevel=2,
            )
            return None

    def _save(self, kind: str, key: str, state: dict) -> Path:
        self.remove_orphans(kind)
        path = self.path(kind, key)
        meta = {
            "key": key,
            "version": __version__,
            "kind": kind,
            "checksum": object_digest(state),
            "data_tag": self.data_tag,
            "data_size": self.data_size,
        }
        atomic_torch_save({"meta": meta, "state": state}, path)
        return path

    def remove_orphans(self, kind: str) -> list[Path]:
        """Delete temporary files of killed writes in ``kind``'s folder (once per instance).

        A file written by a process of this host that no longer runs is removed at once;
        one of another host after a day; one whose writer is unknown after an hour.
        """
        if kind in self._cleaned:
            return []
        self._cleaned.add(kind)
        folder = self.root / _DIRS[kind]
        if not folder.is_dir():
            return []
        return remove_orphans(folder.glob("*.tmp"), folder)
