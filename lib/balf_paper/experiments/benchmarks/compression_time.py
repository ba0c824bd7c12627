"""Compression time and peak memory of BALF per phase, for one model (experiment 5).

One ``balf.Compressor`` run is timed per phase from ``Report.timings`` (:data:`PHASES`);
``total`` is the wall time of building the Compressor and running ``compress`` (so the phases
sum to at most ``total``). In the same process a plain forward pass over the same calibration
batches (eval, ``no_grad``, no hooks) is timed once before and ``--forward-repeats`` times after
(median); ``total_over_forward`` is their ratio in wall time, ``total_over_forward_cpu`` in
process CPU time (``total_cpu``, ``forward_cpu``: what other jobs on a shared machine do not
inflate).

Peak memory: on the CPU the peak resident set size minus a baseline taken with the model and
the calibration data loaded (after the warm-up batches), ``VmHWM`` being reset at the baseline
where the kernel allows it (``rss_peak_reset``; see :mod:`.memory`). On CUDA,
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (``peak_cuda_gb``, and
``cuda_increase_gb`` over the baseline). Memory is in GiB (2^30 bytes).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from balf.errors import BALFError
from balf.pipeline.compressor import Compressor
from balf.ranks.configs import MODES
from balf.report import Report
from balf_paper.data import make_loader
from balf_paper.experiments.benchmarks.memory import GIB, peak_rss_bytes, reset_peak_rss
from balf_paper.experiments.benchmarks.timing import forward_pass, sync, warmup
from balf_paper.experiments.environment import environment_info
from balf_paper.experiments.tasks.image.data import benchmark_model, experiment_data

__all__ = ["PHASES", "calib_size_for", "calibration_data", "measure_model", "settings"]

PHASES = ("statistics", "decomposition", "allocation", "copy", "replacement", "measurement")


def calib_size_for(args: argparse.Namespace, name: str) -> int:
    """The calibration size of ``name`` under the options (see ``--calib-size``)."""
    if args.calib_size is not None:
        return args.calib_size
    if not args.synthetic:
        return args.real_calib_size
    return _model_sizes(args.synthetic_calib_sizes).get(name, args.synthetic_calib_size)


def _model_sizes(spec: Iterable[str] | dict[str, int]) -> dict[str, int]:
    if isinstance(spec, dict):
        return {str(k): int(v) for k, v in spec.items()}
    out = {}
    for item in spec:
        key, sep, value = str(item).partition("=")
        if not sep:
            raise BALFError(f"--synthetic-calib-sizes: expected MODEL=N, got {item!r}")
        out[key] = int(value)
    return out


def calibration_data(
    args: argparse.Namespace, name: str, size: int
) -> tuple[Tensor | Iterable, str]:
    """Calibration batches and their identity.

    Returns:
        synthetic: a seeded ``(size, 3, S, S)`` tensor of standard-normal pixels (split into
        batches by the consumers); real: a DataLoader over ``size`` ImageNet calibration images.
    """
    if args.synthetic:
        g = torch.Generator().manual_seed(args.seed)
        images = torch.randn(size, 3, args.image_size, args.image_size, generator=g)
        return images, f"synthetic-{args.image_size}px-seed{args.seed}"
    data = experiment_data("imagenet", args.data_root, name, size, args.seed)
    return make_loader(data.calibration, args.batch_size, args.workers), data.data_tag


def settings(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """What a row was measured with (must match for ``--resume`` to keep it)."""
    return {
        "mode": args.mode,
        "ratio": args.ratio,
        "n_iters": args.n_iters,
        "calib_size": calib_size_for(args, name),
        "batch_size": args.batch_size,
        "image_size": args.image_size if args.synthetic else 224,
        "synthetic": bool(args.synthetic),
        "device": str(torch.device(args.device)),
    }


def _timed_compression(
    args: argparse.Namespace, model: nn.Module, data: Tensor | Iterable, device: torch.device
) -> tuple[float, Report, dict[str, Any]]:
    """Build a Compressor and compress once: seconds, the report and the memory fields."""
    reset = reset_peak_rss()
    rss_base = peak_rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        cuda_base = torch.cuda.memory_allocated(device)
    mode = MODES[args.mode]
    extra = {"n_iters": args.n_iters} if mode.accepts("n_iters") else {}
    config = mode.make(args.ratio, **extra)
    sync(device)
    start = time.perf_counter()
    compressor = Compressor(model, data, batch_size=args.batch_size, progress=not args.no_progress)
    small, report = compressor.compress(config)
    sync(device)
    total = time.perf_counter() - start
    rss_peak = peak_rss_bytes()
    memory: dict[str, Any] = {
        "peak_rss_increase_gb": (rss_peak - rss_base) / GIB,
        "rss_baseline_gb": rss_base / GIB,
        "rss_peak_gb": rss_peak / GIB,
        "rss_peak_reset": reset,
    }
    if device.type == "cuda":
        cuda_peak = torch.cuda.max_memory_allocated(device)
        memory["peak_cuda_gb"] = cuda_peak / GIB
        memory["cuda_increase_gb"] = (cuda_peak - cuda_base) / GIB
    del small, compressor
    gc.collect()
    return total, report, memory


def measure_model(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Compress ``name`` once and time it; returns the result row.

    Row fields: ``model``, ``mode``, ``ratio``, ``n_iters``, ``calib_size``, ``batch_size``,
    ``image_size``, ``synthetic``, ``device`` (:func:`settings`), ``data`` (calibration identity),
    ``phases`` (seconds per phase), ``total`` (s), ``forward`` (s), ``forward_runs`` (s, every
    pass), ``total_over_forward``, ``total_cpu``, ``forward_cpu``, ``forward_cpu_runs``,
    ``total_over_forward_cpu`` (process CPU seconds), ``peak_rss_increase_gb``,
    ``rss_baseline_gb``, ``rss_peak_gb``, ``rss_peak_reset``, on CUDA ``peak_cuda_gb`` and
    ``cuda_increase_gb``, ``model_flops_ratio``, ``model_params_ratio``, ``factorized_layers``,
    ``layers``, ``environment`` (``command`` is added by the parent process).
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = benchmark_model(name, args.synthetic, args.image_size).to(device)
    data, tag = calibration_data(args, name, calib_size_for(args, name))
    warmup(model, data, device, args.batch_size, args.warmup_batches)
    gc.collect()
    # one forward pass before the compression and the others after, each with its process CPU
    # time (robust to other jobs on a shared machine, which only add wall time)
    forwards, forward_cpus = [], []

    def timed_forward() -> None:
        cpu = time.process_time()
        forwards.append(forward_pass(model, data, device, args.batch_size))
        forward_cpus.append(time.process_time() - cpu)

    timed_forward()
    cpu = time.process_time()
    total, report, memory = _timed_compression(args, model, data, device)
    total_cpu = time.process_time() - cpu
    for _ in range(max(1, args.forward_repeats)):
        timed_forward()
    forward = statistics.median(forwards)
    forward_cpu = statistics.median(forward_cpus)
    return {
        "model": name,
        **settings(args, name),
        "data": tag,
        "phases": {k: float(report.timings[k]) for k in PHASES if k in report.timings},
        "total": total,
        "forward": forward,
        "forward_runs": forwards,
        "total_over_forward": total / forward,
        "total_cpu": total_cpu,
        "forward_cpu": forward_cpu,
        "forward_cpu_runs": forward_cpus,
        "total_over_forward_cpu": total_cpu / forward_cpu,
        **memory,
        "model_flops_ratio": report.model_flops_ratio,
        "model_params_ratio": report.model_params_ratio,
        "factorized_layers": sum(lr.factorized for lr in report.layers.values()),
        "layers": len(report.layers),
        "environment": environment_info(device),
    }
