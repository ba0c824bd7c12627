"""Inference speed of original and BALF-compressed models (experiment 6).

One ``balf.Compressor`` per model produces the ``--mode`` models at every keep-ratio (the
statistics and decompositions are computed once). The latency of the original and of each
compressed model is measured at every batch size on a random input batch: ``--warmup`` untimed
calls, then ``--repeats`` timed calls (``torch.inference_mode()``, eval mode, synchronised on
CUDA); the median is reported, with throughput = batch size / median latency (images/s).
BatchNorm is folded into the preceding convolutions of every variant unless ``--no-fold-bn``;
``--channels-last`` runs CNNs (models with a Conv2d and no attention) in channels-last layout.
"""

from __future__ import annotations

import argparse
import logging
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import timm
import torch
from torch import Tensor, nn

from balf.counting.flops import count_flops, count_params
from balf.io.cache import Cache
from balf.io.export import fold_batchnorm
from balf.pipeline.compressor import Compressor
from balf.ranks.configs import config_for_mode
from balf_paper.data import make_loader
from balf_paper.experiments.benchmarks.timing import latencies
from balf_paper.experiments.tasks.image.data import benchmark_model, experiment_data

__all__ = ["calibration", "measure_model"]

log = logging.getLogger("measure_speed")


def calibration(args: argparse.Namespace, name: str) -> tuple[Tensor | Iterable, Cache | None]:
    """Calibration data (a seeded ``(N, 3, S, S)`` tensor, or a DataLoader) and the cache."""
    if args.synthetic:
        g = torch.Generator().manual_seed(args.seed)
        size = args.image_size
        return torch.randn(args.calib_size, 3, size, size, generator=g), None
    data = experiment_data("imagenet", args.data_root, name, args.calib_size, args.seed)
    loader = make_loader(data.calibration, args.calib_batch_size, args.workers)
    cache = None if args.no_cache else Cache(args.cache_root, data.data_tag, args.calib_size)
    return loader, cache


def _is_cnn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules()) and not any(
        isinstance(m, nn.MultiheadAttention | timm.layers.Attention) for m in model.modules()
    )


@dataclass
class _Bench:
    """What every variant of one model is timed with, and the rows measured so far.

    ``example`` is ``(1, 3, S, S)``; ``inputs`` maps a batch size ``B`` to ``(B, 3, S, S)``.
    """

    args: argparse.Namespace
    name: str
    device: torch.device
    example: Tensor
    inputs: dict[int, Tensor]
    channels_last: bool
    flops0: int
    params0: int

    def __post_init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.base: dict[int, float] = {}  # the original's median latency per batch size

    def time(self, m: nn.Module, variant: str, ratio: float | None, flops: int, params: int):
        """Time ``m`` at every batch size and append its rows (``ratio`` None: the original)."""
        args, m = self.args, m.eval()
        if args.fold_bn:
            m = fold_batchnorm(m, self.example)
        if self.channels_last:
            m = m.to(memory_format=torch.channels_last)
        for b, x in self.inputs.items():
            times = latencies(m, x, args.warmup, args.repeats, self.device)
            latency = statistics.median(times)
            log.info("%s %s batch %d: %.2f ms", self.name, variant, b, 1e3 * latency)
            self.rows.append(
                {
                    "model": self.name,
                    "variant": variant,
                    "keep_ratio": ratio,
                    "flops": flops,
                    "params": params,
                    "flops_ratio": flops / self.flops0,
                    "params_ratio": params / self.params0,
                    "flops_reduction": self.flops0 / flops,
                    "batch_size": b,
                    "latency_s": latency,
                    "latencies_s": times,
                    "throughput": b / latency,
                    "speedup": self.base[b] / latency if b in self.base else 1.0,
                    "channels_last": self.channels_last,
                    "image_size": int(x.shape[-1]),
                    "fold_bn": args.fold_bn,
                }
            )
            if ratio is None:
                self.base[b] = latency


def measure_model(args: argparse.Namespace, name: str) -> list[dict[str, Any]]:
    """Compress ``name`` at every ratio and time every variant at every batch size.

    Returns:
        one row per (variant, batch size), the original first (fields: see
        ``scripts/imagenet/measure_speed.py``).
    """
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = benchmark_model(name, args.synthetic, args.image_size).to(device)
    channels_last = bool(args.channels_last and _is_cnn(model))
    size = args.image_size if args.synthetic else 224
    example = torch.randn(1, 3, size, size, device=device)
    flops0, params0 = count_flops(model, example), count_params(model)
    data, cache = calibration(args, name)
    compressor = Compressor(
        model, data, cache=cache, batch_size=args.calib_batch_size, progress=not args.no_progress
    )
    g = torch.Generator().manual_seed(args.seed + 1)
    inputs = {b: torch.randn(b, 3, size, size, generator=g).to(device) for b in args.batch_sizes}
    if channels_last:
        inputs = {b: x.contiguous(memory_format=torch.channels_last) for b, x in inputs.items()}
    bench = _Bench(args, name, device, example, inputs, channels_last, flops0, params0)
    bench.time(model, "original", None, flops0, params0)
    for ratio in args.ratios:
        config = config_for_mode(args.mode, ratio, n_iters=args.n_iters)
        small, _ = compressor.compress(config)
        flops = count_flops(small, example)
        bench.time(small, f"{args.mode}@{ratio:g}", ratio, flops, count_params(small))
        del small
    return bench.rows
