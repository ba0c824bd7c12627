"""Distributed calibration: 2 gloo processes on shards give the single-process result."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import balf


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 16),
        nn.ReLU(),
        nn.Linear(16, 5),
    ).double()


def _data() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(24, 3, 8, 8, dtype=torch.float64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.set_num_threads(1)
        shard = _data()[rank::world]  # each process sees only its shard
        stats = balf.collect_statistics(_model(), shard.split(5), progress=False)
        _, report = balf.compress(_model(), stats, balf.BALFConfig(0.5), progress=False)
        torch.save(
            {
                "grams": {n: s.gram for n, s in stats.layers.items()},
                "rows": {n: s.rows for n, s in stats.layers.items()},
                "samples": stats.num_samples,
                "ranks": report.ranks,
            },
            f"{out}.{rank}",
        )
    finally:
        dist.destroy_process_group()


def test_two_process_statistics_equal_single_process(tmp_path):
    out = str(tmp_path / "result")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)

    single = balf.collect_statistics(_model(), _data().split(5), progress=False, distributed=False)
    _, report = balf.compress(_model(), single, balf.BALFConfig(0.5), progress=False)
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        assert got["samples"] == single.num_samples == 24
        for name, st in single.layers.items():
            torch.testing.assert_close(got["grams"][name], st.gram, rtol=1e-12, atol=1e-12)
            assert got["rows"][name] == st.rows
        assert got["ranks"] == report.ranks  # every process compresses identically


def _cached_worker(rank: int, world: int, port: int, root: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.set_num_threads(1)
        shard = _data()[rank::world].split(5)
        ranks = []
        for _ in range(2):  # the second run loads the statistics on every process together
            cache = balf.Cache(root)
            _, report = balf.compress(
                _model(), shard, balf.BALFConfig(0.5), cache=cache, progress=False
            )
            ranks.append(report.ranks)
        torch.save({"ranks": ranks}, f"{root}/ranks.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_processes_share_one_cache_entry(tmp_path):
    # the shards differ, so the key covers every process's data fingerprint: one entry, no hang
    mp.spawn(_cached_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    assert len(list((tmp_path / "activation-cache").glob("*.pt"))) == 1
    got = [torch.load(tmp_path / f"ranks.{r}", weights_only=True)["ranks"] for r in range(2)]
    assert got[0][0] == got[0][1] == got[1][0] == got[1][1]


class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        return x + self.down(torch.tanh(self.up(x)))


def _chain() -> nn.Module:
    """A stem, three blocks in an nn.Sequential and a head: what block by block calibrates."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Sequential(*(_Block(8) for _ in range(3))))
    model.append(nn.Linear(8, 6))
    return model.double().eval()


def _token_data() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(24, 5, 4, dtype=torch.float64)


STRATEGIES = {
    "whole-model": None,
    "block-by-block": balf.BlockByBlock(blocks=["1.0", "1.1", "1.2"]),
    "block-by-block-refit": balf.BlockByBlock(
        blocks=["1.0", "1.1", "1.2"], refit=balf.AnchoredRefit(1.0, 1e-3, bias_correction=True)
    ),
}


def _compress_worker(rank: int, world: int, port: int, out: str, strategy) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.set_num_threads(1)
        shard = list(_token_data()[rank::world].split(4))  # each process sees only its shard
        small, report = balf.compress(
            _chain(), shard, balf.BALFConfig(0.5), progress=False, strategy=strategy
        )
        torch.save(
            {
                "ranks": report.ranks,
                "energy": {n: lr.energy_kept for n, lr in report.layers.items()},
                "state": small.state_dict(),
            },
            f"{out}.{rank}",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("strategy", STRATEGIES.values(), ids=list(STRATEGIES))
def test_two_processes_compress_as_one_process_on_the_whole_data(tmp_path, strategy):
    """Every strategy sums its statistics over the processes (block by block allocated ranks
    and fitted factors on each process's shard alone, silently)."""
    out = str(tmp_path / "result")
    mp.spawn(_compress_worker, args=(2, _free_port(), out, strategy), nprocs=2, join=True)
    whole = list(_token_data().split(4))
    small, report = balf.compress(
        _chain(), whole, balf.BALFConfig(0.5), progress=False, strategy=strategy
    )
    assert any(lr.factorized for lr in report.layers.values())
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        assert got["ranks"] == report.ranks
        for name, lr in report.layers.items():
            assert got["energy"][name] == pytest.approx(lr.energy_kept, rel=1e-9)
        for key, value in small.state_dict().items():
            torch.testing.assert_close(got["state"][key], value, rtol=1e-9, atol=1e-12)
