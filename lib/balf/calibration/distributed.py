"""Helpers for running under ``torchrun`` (PyTorch's own distributed engine).

Calibration statistics are summed with ``all_reduce`` (see :meth:`balf.Statistics.all_reduce`),
evaluation sums likewise; files are written by the main process only.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset

__all__ = ["init_from_environment", "is_main_process", "rank_and_world", "shard"]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Whether this process writes files (rank 0, or no process group)."""
    return rank_and_world()[0] == 0


def init_from_environment(device: str) -> str:
    """Initialise the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Returns:
        The device this process should use (``cuda:<LOCAL_RANK>`` on GPUs).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


def shard(dataset: Dataset) -> Dataset:
    """This process's share of ``dataset`` (every ``world``-th item from ``rank``)."""
    rank, world = rank_and_world()
    if world == 1:
        return dataset
    return Subset(dataset, list(range(rank, len(dataset), world)))
