"""The cached phases of a compression: statistics and decompositions, loaded or computed.

Each phase looks its entry up in a :class:`balf.Cache` (when one is given) under a key derived
from the content (see :mod:`balf.io.cache`), and computes and stores it on a miss. Under
``torch.distributed`` every process loads or every process collects (never a mix, which would
hang the collectives), and only the main process writes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from balf._device import model_device
from balf.calibration.collect import collect_statistics
from balf.calibration.distributed import is_main_process, rank_and_world
from balf.calibration.statistics import Statistics
from balf.decomposition import LayerDecomposition, decompose_layers
from balf.errors import StatisticsError
from balf.io.cache import Cache
from balf.io.fingerprints import data_fingerprint, statistics_digest
from balf.io.hashing import model_fingerprint

__all__ = ["load_or_collect_statistics", "load_or_decompose"]


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
    out = decompose_layers(targets, stats, device=device, progress=progress)
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
