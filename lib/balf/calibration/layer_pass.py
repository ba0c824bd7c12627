"""Statistics of a set of layers while some forward passes run: the one hook path of every
calibration strategy.

Whole-model calibration (:func:`balf.collect_statistics`) and block by block (the layers before
the first block, each block, the layers after the last) all get their statistics from
:func:`hooked_pass`, so they share one contract:

1. one accumulator per layer (:class:`~balf.calibration.accumulator.GramAccumulator` unless an
   :data:`~balf.calibration.accumulator.AccumulatorFactory` says otherwise) is registered as a
   forward hook with ``prepend=True``: it sees the layer's own output, before any forward hook of
   the user changes it; rows of padding tokens are left out (:mod:`balf.calibration.padding`);
   the Gram accumulators of one pass compute the input Gram of a tensor that several layers read
   once per call;
2. ``run()`` runs the forward passes; the hooks are removed afterwards, even on error;
3. under ``torch.distributed`` (a process group of more than one process) the Gram matrices, row
   and call counts are summed over the processes: each process passes its own shard and all get
   the statistics of the whole calibration set;
4. layers whose hook never fired on any process are dropped, each with the reason
   (:func:`balf.calibration.uncalled.uncalled_reasons`: used only through its weight, or unused);
5. NaN/Inf in the statistics raise :class:`balf.StatisticsError` naming the layer.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from balf.calibration.accumulator import (
    Accumulator,
    AccumulatorFactory,
    GramAccumulator,
    SharedInputGram,
)
from balf.calibration.padding import PaddingMask
from balf.calibration.statistics import LayerStatistics, check_finite
from balf.calibration.uncalled import uncalled_reasons
from balf.layers.dispatch import geometry_of
from balf.layers.geometry import Side

__all__ = ["HookedPass", "hooked_pass", "is_distributed", "sum_over_processes"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group of more than one process is running."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_over_processes(value: int, distributed: bool | None = None) -> int:
    """``value`` summed over the processes (``distributed=None``: when :func:`is_distributed`)."""
    if not (is_distributed() if distributed is None else distributed):
        return value
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return int(round(t.item()))


def _all_reduce(accumulators: Mapping[str, Accumulator]) -> None:
    """Sum every accumulator's Gram matrices, rows and calls over the processes (in place)."""
    import torch.distributed as dist

    stats = [acc.stats for acc in accumulators.values()]
    if not stats:
        return
    device = stats[0].gram.device
    counts = torch.tensor(
        [s.rows for s in stats] + [s.calls for s in stats], dtype=torch.float64, device=device
    )
    dist.all_reduce(counts)
    for s in stats:
        dist.all_reduce(s.gram)
    values = counts.cpu().tolist()
    for i, s in enumerate(stats):
        s.rows = int(round(values[i]))
        s.calls = int(round(values[len(stats) + i]))


@dataclass
class HookedPass(Generic[T]):
    """What :func:`hooked_pass` returns.

    Attributes:
        layers: the statistics of every layer that was called, by name (float64 Gram matrices
            ``(G, S, S)``, summed over the processes).
        skipped: the layers never called, with the reason.
        result: what ``run()`` returned.
    """

    layers: dict[str, LayerStatistics]
    skipped: dict[str, str]
    result: T


def hooked_pass(
    modules: Mapping[str, nn.Module],
    run: Callable[[], T],
    *,
    side: Side | None = None,
    accumulator: AccumulatorFactory | None = None,
    padding: PaddingMask | None = None,
    distributed: bool | None = None,
    rerun_example: Callable[[], Any] | None = None,
) -> HookedPass[T]:
    """The statistics of ``modules`` while ``run()`` runs (see the module docstring).

    Args:
        modules: the layers by name (every process of a distributed run passes the same ones).
        run: runs the forward passes (e.g. the model on every calibration batch).
        side: ``"input"``/``"output"`` for every layer; ``None``: each layer's cheaper side.
        accumulator: makes each layer's hook, ``accumulator(name, module, side)`` (``None``:
            :class:`~balf.calibration.accumulator.GramAccumulator`, leaving out the rows of
            padding tokens that ``padding`` marks while ``run()`` runs).
        padding: the padding mask ``run()`` sets for each batch (:mod:`balf.calibration.padding`).
        distributed: sum over the processes of ``torch.distributed``; ``None``: whenever a
            process group of more than one process is running.
        rerun_example: one forward pass on an example input, run only when a layer was never
            called, to tell why (``None``: the generic reason).

    Returns:
        :class:`HookedPass`: the called layers' statistics, the uncalled layers with the
        reason, and ``run()``'s result.

    Raises:
        StatisticsError: a layer's statistics hold NaN or Inf.
    """
    if accumulator is None:
        # one input Gram per call for the layers reading one tensor
        accumulator = functools.partial(
            GramAccumulator, shared=SharedInputGram(), padding=padding
        )
    accumulators = {
        name: accumulator(name, m, side or geometry_of(m).preferred_side())
        for name, m in modules.items()
    }
    # prepended: the layer's own output, before any forward hook of the user changes it
    handles = [m.register_forward_hook(accumulators[n], prepend=True) for n, m in modules.items()]
    try:
        result = run()
    finally:
        for h in handles:
            h.remove()
    if is_distributed() if distributed is None else distributed:
        _all_reduce(accumulators)
    uncalled = {n: modules[n] for n, acc in accumulators.items() if acc.stats.calls == 0}
    skipped = uncalled_reasons(uncalled, rerun_example)
    if skipped:
        log.warning(
            "%d layer(s) never called during calibration are skipped: %s",
            len(skipped),
            ", ".join(list(skipped)[:10]),
        )
    layers = {n: acc.stats for n, acc in accumulators.items() if n not in skipped}
    check_finite(layers)
    return HookedPass(layers, skipped, result)
