"""Opt-in disk cache of statistics (activation-cache/) and decompositions (factorization-cache/).

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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from balf._device import model_device
from balf._version import __version__
from balf.calibration.collect import Statistics, collect_statistics
from balf.calibration.distributed import is_main_process, rank_and_world
from balf.decomposition import LayerDecomposition, decompose_layer
from balf.errors import StatisticsError
from balf.io.atomic import atomic_torch_save
from balf.io.fingerprints import data_fingerprint, statistics_digest
from balf.io.hashing import model_fingerprint, object_digest
from balf.io.orphans import remove_orphans

__all__ = [
    "Cache",
    "load_or_collect_statistics",
    "load_or_decompose",
]

log = logging.getLogger(__name__)

_DIRS = {
    "statistics": "activation-cache",
    "decompositions": "factorization-cache",
    # measured sensitivity weights (balf.sensitivity): they depend on the model and the data
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

    def save(self, kind: str, key: str, state: dict) -> Path:
        """Store ``state`` atomically under ``key``; returns the file path."""
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


# -- the cached phases ----------------------------------------------------------------------------


def load_or_collect_statistics(
    cache: Cache | None,
    model: nn.Module,
    targets: dict[str, nn.Module],
    data: Iterable | Tensor,
    *,
    check: Callable[[Statistics], None],
    side: str | None = None,
    batch_size: int = 64,
    progress: bool = True,
    forward: Callable | None = None,
    max_batches: int | None = None,
) -> Statistics:
    """Statistics of ``model`` on ``data``, from ``cache`` when it holds them.

    ``check(stats)`` validates a loaded entry (it raises :class:`StatisticsError` if unusable).
    """
    key = None
    if cache is not None:
        fingerprint, data = data_fingerprint(data, batch_size, max_batches, forward)
        key = cache.key(
            "statistics",
            model=model_fingerprint(model),
            layers=list(targets),
            side=side,
            data=_all_processes(fingerprint),  # under torchrun: every process's shard
        )
        state = cache.load("statistics", key)
        stats = None
        if state is not None:
            try:
                stats = Statistics.from_state(state)
                check(stats)
            except (StatisticsError, KeyError, TypeError) as exc:
                warnings.warn(f"cached statistics unusable ({exc}); recollecting", stacklevel=2)
                stats = None
        if all(_all_processes(stats is not None)):  # collect together or not at all
            return stats.to(model_device(model))
    stats = collect_statistics(
        model,
        data,
        list(targets),
        side=side,
        batch_size=batch_size,
        progress=progress,
        forward=forward,
        max_batches=max_batches,
    )
    if key is not None and is_main_process():
        cache.save("statistics", key, stats.to_state())
    return stats


def load_or_decompose(
    cache: Cache | None,
    targets: dict[str, nn.Module],
    stats: Statistics | None,
    *,
    device: torch.device,
    progress: bool = True,
) -> dict[str, LayerDecomposition]:
    """Per-layer decompositions (activation-aware from ``stats``, else plain SVD), cached."""
    key = None
    if cache is not None:
        key = cache.key(
            "decompositions",
            layers=list(targets),
            weights=[model_fingerprint(m) for m in targets.values()],
            statistics=statistics_digest(stats, targets) if stats is not None else None,
        )
        state = cache.load("decompositions", key)
        if state is not None and set(state) == set(targets):
            return {
                n: LayerDecomposition.from_state(
                    {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in s.items()}
                )
                for n, s in state.items()
            }
    out = {}
    bar = tqdm(targets.items(), desc="decompositions", unit="layer", disable=not progress)
    for name, module in bar:
        out[name] = decompose_layer(module, stats.layers[name] if stats is not None else None)
    if key is not None and is_main_process():
        state = {
            n: {k: (v.cpu() if isinstance(v, Tensor) else v) for k, v in d.to_state().items()}
            for n, d in out.items()
        }
        cache.save("decompositions", key, state)
    return out


def _all_processes(value: Any) -> list[Any]:
    """``value`` of every process of the ``torch.distributed`` group (``[value]`` without one)."""
    world = rank_and_world()[1]
    if world == 1:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, value)
    return out
