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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils import benchmark
from tqdm.auto import tqdm

from ._io import atomic_json_dump
from .costs import LayerCost
from .errors import BALFError, BudgetError
from .representation import LayerGeometry, geometry_of

__all__ = [
    "LatencyCost",
    "LatencyTable",
    "LayerLatency",
    "allowed_ranks",
    "layer_keep_ratio",
    "measure_latency",
    "time_call",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerLatency:
    """Measured seconds of one layer's call: dense, and factorized at a grid of ranks.

    Attributes:
        dense: seconds of the dense layer.
        ranks: measured ranks, ascending.
        lowrank: seconds of the factorized layer at ``ranks``.
    """

    dense: float
    ranks: list[int]
    lowrank: list[float]

    def __post_init__(self) -> None:
        if len(self.ranks) != len(self.lowrank):
            raise BALFError("LayerLatency needs one low-rank latency per measured rank")
        if list(self.ranks) != sorted(set(self.ranks)):
            raise BALFError(f"LayerLatency ranks must be increasing, got {self.ranks}")

    def lowrank_at(self, ranks: np.ndarray | int) -> np.ndarray:
        """Latency of the factorized layer at ``ranks``: linear between measured ranks,
        constant beyond the ends, non-decreasing in the rank (running maximum of the grid)."""
        if not self.ranks:
            return np.full(np.shape(ranks), np.inf)
        monotone = np.maximum.accumulate(np.asarray(self.lowrank, dtype=np.float64))
        return np.interp(np.asarray(ranks, dtype=np.float64), self.ranks, monotone)


@dataclass
class LatencyTable:
    """Measured latencies of a model's chosen layers (and of the whole model).

    Attributes:
        layers: per layer name, its :class:`LayerLatency`.
        model: seconds of the whole dense model (``None``: budgets refer to the layers alone).
        key: what the measurements depend on (device, threads, dtype, batch size, version).
    """

    layers: dict[str, LayerLatency]
    model: float | None = None
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def fixed(self) -> float:
        """Seconds of the model outside the chosen layers, ``max(0, T − Σ dense)``."""
        if self.model is None:
            return 0.0
        return max(0.0, self.model - sum(lat.dense for lat in self.layers.values()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable."""
        return {
            "layers": {n: asdict(lat) for n, lat in self.layers.items()},
            "model": self.model,
            "key": self.key,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        """Inverse of :meth:`to_dict`."""
        layers = {n: LayerLatency(**v) for n, v in data["layers"].items()}
        return cls(layers, data.get("model"), dict(data.get("key", {})))


class LatencyCost:
    """A layer's cost model with measured latencies (``metric="latency"``), otherwise as
    :class:`balf.costs.LayerCost`.

    Args:
        base: the layer's FLOPs/params cost model.
        latency: its measured latencies.
        fixed: seconds of the model outside the chosen layers (see :attr:`LatencyTable.fixed`).
    """

    def __init__(self, base: LayerCost, latency: LayerLatency, fixed: float = 0.0) -> None:
        self.base = base
        self.latency = latency
        self.fixed = fixed

    @property
    def geometry(self) -> LayerGeometry:
        return self.base.geometry

    @property
    def rows_per_sample(self) -> float | None:
        return self.base.rows_per_sample

    def _lowrank_seconds(self, ranks: np.ndarray) -> np.ndarray:
        geo = self.geometry
        seconds = self.latency.lowrank_at(ranks)
        # ranks at which the factorization has at least as many weights are never installed
        return np.where(
            geo.groups * ranks * (geo.in_dim + geo.out_dim) < geo.dense_params, seconds, np.inf
        )

    def is_cheaper(self, rank: int) -> bool:
        """Whether the factorized layer at ``rank`` is smaller *and* measured faster."""
        seconds = float(self._lowrank_seconds(np.array([rank]))[0])
        return self.geometry.is_cheaper(rank) and seconds < self.latency.dense

    def curve(self, metric: str) -> np.ndarray:
        """``c(r)`` for r = 1..R, shape ``(R,)``: measured seconds for ``"latency"``."""
        if metric != "latency":
            return self.base.curve(metric)
        ranks = np.arange(1, self.geometry.max_rank + 1, dtype=np.float64)
        return np.minimum(self._lowrank_seconds(ranks), self.latency.dense)

    def dense(self, metric: str) -> float:
        return self.latency.dense if metric == "latency" else self.base.dense(metric)

    def lowrank(self, rank: int, metric: str) -> float:
        if metric == "latency":
            return float(self.latency.lowrank_at(rank))
        return self.base.lowrank(rank, metric)

    def realised(self, rank: int, metric: str) -> float:
        """Cost of what is installed at ``rank`` (factorized only where smaller and faster)."""
        return self.lowrank(rank, metric) if self.is_cheaper(rank) else self.dense(metric)


def layer_keep_ratio(costs: Sequence[LatencyCost], ratio: float) -> float:
    """The keep-ratio of the chosen layers' latency that keeps ``ratio`` of the model's.

    ``(ratio·T − F) / S`` with ``S = Σ dense``, ``F`` the fixed part, ``T = S + F``.

    Raises:
        BudgetError: the fixed part alone exceeds ``ratio·T``.
    """
    total = sum(c.latency.dense for c in costs)
    fixed = costs[0].fixed if costs else 0.0
    keep = (ratio * (total + fixed) - fixed) / total
    if keep <= 0:
        share = fixed / (total + fixed)
        raise BudgetError(
            f"a latency keep-ratio of {ratio:g} is unreachable: the layers that are not "
            f"factorized take {share:.3g} of the measured latency; use a ratio above {share:.3g}"
        )
    return min(keep, 1.0)


def allowed_ranks(max_rank: int, rank_multiple: int) -> np.ndarray:
    """Ranks ``r ≤ max_rank`` that are multiples of ``rank_multiple``, plus ``max_rank``."""
    ranks = np.arange(rank_multiple, max_rank + 1, rank_multiple)
    return np.union1d(ranks, [max_rank]).astype(int)


# -- measuring ------------------------------------------------------------------------------------


def time_call(fn, min_run_time: float, num_threads: int) -> float:
    """Median seconds of ``fn()`` by :meth:`torch.utils.benchmark.Timer.blocked_autorange`."""
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


def _layer_signature(cls, dense: nn.Module, shape: tuple[int, ...], grid: list[int]) -> str:
    return json.dumps(
        {"kind": cls.kind, "dense": cls.dense_spec(dense), "input": list(shape), "grid": grid},
        sort_keys=True,
    )


def _measure_layer(cls, dense: nn.Module, shape, grid, device, dtype, min_run_time, threads):
    """Seconds of (a copy of) the dense layer and of its factorization (with a bias, as after
    BatchNorm folding) at every ``grid`` rank, on a random input of ``shape``."""
    spec = {"kind": cls.kind, "rank": 1, "dense": {**cls.dense_spec(dense), "bias": True}}
    x = torch.randn(shape, device=device, dtype=dtype)

    def seconds(layer: nn.Module) -> float:
        layer = layer.to(device=device, dtype=dtype).eval()

        @torch.inference_mode()
        def call():
            return layer(x)

        return time_call(call, min_run_time, threads)

    dense_s = seconds(copy.deepcopy(dense))
    lowrank = [seconds(cls.from_spec({**spec, "rank": r}, device, dtype)) for r in grid]
    return LayerLatency(dense_s, list(grid), lowrank)


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
    from ._version import __version__
    from .export import fold_batchnorm
    from .serialization import _class_for_dense

    if batch_size < 1 or rank_multiple < 1 or points < 1:
        raise BALFError("batch_size, rank_multiple and points must be positive integers")
    threads = threads or torch.get_num_threads()
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    x = example_input[:1].to(device=device, dtype=dtype)
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
            cached = json.loads(cache_path.read_text()).get("layers", {})
    model = model.eval()
    shapes = _input_shapes(model, x, layers)
    out: dict[str, LayerLatency] = {}
    fresh = 0
    bar = tqdm(layers.items(), desc="latency", unit="layer", disable=not progress)
    for name, dense in bar:
        cls = _class_for_dense(dense, name)
        if cls is None:
            raise BALFError(f"layer {name!r}: no low-rank kind for {type(dense).__name__}")
        grid = _grid(geometry_of(dense), rank_multiple, points)
        sig = _layer_signature(cls, dense, shapes[name], grid)
        if sig not in cached:
            lat = _measure_layer(
                cls, dense, shapes[name], grid, device, dtype, min_run_time, threads
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
