"""A Compressor's latency table follows the thread count at use time.

The old Compressor kept using the table it measured with 1 thread after
``torch.set_num_threads(2)``.
"""

import torch
from torch import nn

import balf


def test_the_latency_table_is_measured_again_after_set_num_threads():
    model = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    compressor = balf.Compressor(
        model, torch.randn(16, 128), latency={"min_run_time": 0.002, "points": 2}, progress=False
    )
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert compressor.latency_table().key["threads"] == 1
        torch.set_num_threads(2)
        assert compressor.latency_table().key["threads"] == 2
    finally:
        torch.set_num_threads(threads)


def test_a_table_given_by_the_caller_is_used_as_given():
    model = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    x = torch.randn(16, 128)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        layers = {"0": model[0], "2": model[2]}
        table = balf.ranks.latency.measure_latency(
            model, x[:1], layers, min_run_time=0.002, points=2, progress=False
        )
        compressor = balf.Compressor(model, x, latency=table, progress=False)
        torch.set_num_threads(2)
        assert compressor.latency_table() is table  # e.g. measured for another target
    finally:
        torch.set_num_threads(threads)
