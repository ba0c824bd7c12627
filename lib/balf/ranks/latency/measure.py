"""Latency budgets: the cost of a layer at rank r, measured on the target device.

``BALFConfig(ratio, metric="latency")`` keeps a fraction ``ratio`` of the model's *measured*
latency. Each chosen layer is timed for its real input shape (one forward pass of the model
records the shapes), dense and factorized over a grid of ranks, with
:class:`torch.utils.benchmark.Timer`; between grid ranks the latency is interpolated linearly
and made non-decreasing in the rank. The allocator (method §5) then runs unchanged on the curves
``c_l(r) = min(latency_lowrank(r), latency_dense)``, and a layer whose factorized form is not
faster than its dense form at the chosen rank stays dense.

The whole model is timed too (BatchNorm folded into the convolutions, as a deployment would):
the part of its latency outside the chosen layers, ``F = T − Σ_l dense_l`` (≥ 0), cannot be
reduced, so keeping ``ρ`` of ``T`` means keeping ``(ρ·T − F) / Σ_l dense_l`` of the layers'.

Measurements are cached on disk (``<cache_dir>/latency/<key>.json``) under a key of the device,
threads, dtype, batch size and library version; each entry is keyed by the layer's kind,
hyper-parameters and input shape, so repeated layers are timed once.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import platform
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from balf._eval_mode import restores_mode
from balf.errors import BALFError
from balf.io.atomic import atomic_json_dump, read_json_or_none
from balf.layers.dispatch import geometry_of
from balf.layers.geometry import LayerGeometry
from balf.ranks.latency.table import LatencyTable, LayerLatency, allowed_ranks

__all__ = ["measure_latency", "time_call"]

log = logging.getLogger(__name__)


# -- measuring ------------------------------------------------------------------------------------


def time_call(fn, min_run_time: float, num_threads: int) -> float:
    """Median seconds of ``fn()`` by :meth:`torch.utils.benchmark.Timer.blocked_autorange`."""
    from torch.utils import benchmark  # imported on use: it probes CUDA (a warning on CPU machines)

    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=num_threads)
    return float(timer.blocked_autorange(min_run_time=min_run_time).median)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu:{name}"


def _input_shapes(model: nn.Module, x: Tensor, layers: Mapping[str, nn.Module]) -> dict:
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in layers.items():

        def hook(module, args, name=name):
            shapes.setdefault(name, tuple(args[0].shape))

        handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in layers if n not in shapes]
    if missing:
        raise BALFError(f"layers {missing[:5]} were not called by the model's forward pass")
    return shapes


def _grid(geo: LayerGeometry, rank_multiple: int, points: int) -> list[int]:
    """Up to ``points`` allowed ranks, evenly spread up to the largest cheaper one."""
    cheaper = [int(r) for r in allowed_ranks(geo.max_rank, rank_multiple) if geo.is_cheaper(r)]
    if len(cheaper) <= points:
        return cheaper
    idx = np.unique(np.round(np.linspace(0, len(cheaper) - 1, points)).astype(int))
    return [cheaper[i] for i in idx]


def _layer_signature(kind, dense: nn.Module, shape: tuple[int, ...], grid: list[int]) -> str:
    return json.dumps(
        {"kind": kind.name, "dense": kind.dense_spec(dense), "input": list(shape), "grid": grid},
        sort_keys=True,
    )


def _measure_layer(kind, dense: nn.Module, shape, grid, device, dtype, min_run_time, threads):
    """Seconds of (a copy of) the dense layer and of its factorization (with a bias, as after
    BatchNorm folding) at every ``grid`` rank, on a random input of ``shape``."""
    spec = {"kind": kind.name, "rank": 1, "dense": {**kind.dense_spec(dense), "bias": True}}
    x = torch.randn(shape, device=device, dtype=dtype)

    def seconds(layer: nn.Module) -> float:
        layer = layer.to(device=device, dtype=dtype).eval()

        @torch.inference_mode()
        def call():
            return layer(x)

        return time_call(call, min_run_time, threads)

    dense_s = seconds(copy.deepcopy(dense))
    lowrank = [seconds(kind.empty({**spec, "rank": r}, device, dtype)) for r in grid]
    return LayerLatency(dense_s, list(grid), lowrank)


@restores_mode  # the caller's train/eval flags come back as they were
def measure_latency(
    model: nn.Module,
    example_input: Tensor,
    layers: Mapping[str, nn.Module],
    *,
    batch_size: int = 1,
    rank_multiple: int = 1,
    points: int = 12,
    min_run_time: float = 0.05,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    fold_bn: bool = True,
    progress: bool = True,
) -> LatencyTable:
    """Time every chosen layer, dense and factorized over a grid of ranks, and the whole model.

    Args:
        model: the dense model (not modified).
        example_input: one input ``(1, ...)`` (repeated to ``batch_size``), any device: the
            measurements run on the model's device and dtype.
        layers: the chosen layers by module name (e.g. ``Compressor.targets``).
        batch_size: the deployment batch size the latencies are for.
        rank_multiple: measured ranks are multiples of this (and the allocator should use it).
        points: at most this many ranks per layer, spread up to the largest rank whose
            factorization has fewer weights than the dense layer.
        min_run_time: seconds of :meth:`~torch.utils.benchmark.Timer.blocked_autorange` per
            measurement (the median of its blocks is kept).
        threads: CPU threads (default: ``torch.get_num_threads()``).
        cache_dir: reuse and store layer measurements in ``<cache_dir>/latency/``.
        fold_bn: time the whole model with BatchNorm folded into the convolutions.

    Returns:
        The :class:`LatencyTable` (seconds per call at ``batch_size``).
    """
    from balf._version import __version__
    from balf.io.export import fold_batchnorm
    from balf.layers.attention import temporarily_unpacked
    from balf.layers.kind import kind_for

    if batch_size < 1 or rank_multiple < 1 or points < 1:
        raise BALFError("batch_size, rank_multiple and points must be positive integers")
    threads = threads or torch.get_num_threads()
    if not isinstance(example_input, torch.Tensor):
        raise BALFError(
            f"example_input must be one tensor batch (the model is timed as model(x)), got "
            f"{type(example_input).__name__}"
        )
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    # integer inputs (token ids for an embedding) keep their dtype; float inputs take the model's
    x = example_input[:1].to(device=device)
    if x.is_floating_point():
        x = x.to(dtype=dtype)
    x = x.expand(batch_size, *x.shape[1:]).contiguous()
    key = {
        "device": _device_name(device),
        "threads": threads,
        "dtype": str(dtype).removeprefix("torch."),
        "batch_size": batch_size,
        "library_version": __version__,
        "min_run_time": min_run_time,
    }
    cache_path = None
    cached: dict[str, Any] = {}
    if cache_dir is not None:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        cache_path = Path(cache_dir) / "latency" / f"{digest}.json"
        if cache_path.is_file():
            stored = read_json_or_none(cache_path)
            layers_ok = isinstance(stored, dict) and isinstance(stored.get("layers"), dict)
            if layers_ok:
                cached = stored["layers"]
            else:
                warnings.warn(
                    f"corrupt latency cache entry {cache_path}; measuring again", stacklevel=2
                )
    model = model.eval()
    with temporarily_unpacked(model):  # attention projections are called (layers.attention)
        shapes = _input_shapes(model, x, layers)
    out: dict[str, LayerLatency] = {}
    fresh = 0
    bar = tqdm(layers.items(), desc="latency", unit="layer", disable=not progress)
    for name, dense in bar:
        kind = kind_for(dense)
        if kind is None:
            raise BALFError(f"layer {name!r}: no layer kind for {type(dense).__name__}")
        grid = _grid(geometry_of(dense), rank_multiple, points)
        sig = _layer_signature(kind, dense, shapes[name], grid)
        if sig not in cached:
            lat = _measure_layer(
                kind, dense, shapes[name], grid, device, dtype, min_run_time, threads
            )
            cached[sig] = asdict(lat)
            fresh += 1
        out[name] = LayerLatency(**cached[sig])
    if cache_path is not None and fresh:
        atomic_json_dump({"key": key, "layers": cached}, cache_path)
    timed = fold_batchnorm(model, x[:1]) if fold_bn else model

    @torch.inference_mode()
    def whole():
        return timed(x)

    total = time_call(whole, max(min_run_time, 0.2), threads)
    log.info("latency: %d layers (%d measured now), model %.3f ms", len(out), fresh, 1e3 * total)
    return LatencyTable(out, total, key)
