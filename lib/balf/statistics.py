"""Calibration statistics (method §2): one forward pass, one Gram matrix per layer.

For every target layer the cheaper side is accumulated in float64:

* ``"output"`` — ``Γ_g = Y_gᵀ Y_g`` (K×K) from the pre-bias output in a forward hook, no im2col;
* ``"input"``  — ``C_g = X_gᵀ X_g`` (D×D), through chunked im2col for convolutions; only when D < K.

Activations are never stored: each call's product is added to the accumulator and dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._io import atomic_torch_save
from ._version import __version__
from .errors import BALFError, StatisticsError
from .hashing import tensor_digest
from .modes import SIDES, Side
from .representation import geometry_of, input_gram, output_gram, rows_of_call
from .targets import resolve_layers

__all__ = ["LayerStatistics", "Statistics", "collect_statistics", "iter_batches"]

log = logging.getLogger(__name__)

_FORMAT = 1


@dataclass
class LayerStatistics:
    """Accumulated second moments of one layer.

    Attributes:
        side: ``"input"`` (``gram`` = ``Σ X_gᵀX_g``, (G, D, D)) or ``"output"``
            (``Σ Y_gᵀY_g``, (G, K, K)).
        gram: float64 Gram matrices, ``(G, S, S)``.
        rows: rows ``N`` accumulated per group over all calls (output vectors seen).
        calls: number of forward calls seen.
        output_shape: per-sample output shape of the last call, e.g. ``(C_out, H, W)``.
        weight_digest: digest of the layer's weight when collected (detects a changed model).
    """

    side: Side
    gram: Tensor
    rows: int = 0
    calls: int = 0
    output_shape: tuple[int, ...] = ()
    weight_digest: str = ""


@dataclass
class Statistics:
    """Per-layer calibration statistics of a model, plus what the cost model needs.

    Attributes:
        layers: statistics by module name.
        num_samples: calibration samples seen (sum of batch sizes).
        example_input: one calibration input, ``(1, ...)`` on the CPU, for FLOP counting.
        version: library version that collected them.
    """

    layers: dict[str, LayerStatistics]
    num_samples: int
    example_input: Tensor | None = None
    version: str = __version__
    extra: dict = field(default_factory=dict)

    def rows_per_sample(self, name: str) -> float:
        """Output vectors per sample (``H_out·W_out`` for a conv, tokens for a Linear)."""
        return self.layers[name].rows / self.num_samples

    def to(self, device: torch.device | str) -> Statistics:
        """Move the Gram matrices to ``device`` (in place); returns ``self``."""
        for st in self.layers.values():
            st.gram = st.gram.to(device)
        return self

    def check_finite(self) -> None:
        """Raise :class:`StatisticsError` naming the first layer with NaN/Inf statistics."""
        for name, st in self.layers.items():
            if not torch.isfinite(st.gram).all():
                raise StatisticsError(
                    f"layer {name!r}: calibration statistics contain NaN or Inf. Check the "
                    "calibration inputs for NaN/Inf and, for float16 models, overflow "
                    "(collect statistics in float32 or bfloat16)."
                )

    def to_state(self) -> dict:
        """A ``torch.save``-able dict of plain types and tensors (``weights_only``-loadable)."""
        return {
            "format": _FORMAT,
            "version": self.version,
            "num_samples": self.num_samples,
            "example_input": self.example_input,
            "extra": dict(self.extra),
            "layers": {
                name: {
                    "side": st.side,
                    "gram": st.gram.cpu(),
                    "rows": st.rows,
                    "calls": st.calls,
                    "output_shape": list(st.output_shape),
                    "weight_digest": st.weight_digest,
                }
                for name, st in self.layers.items()
            },
        }

    @classmethod
    def from_state(cls, state: dict) -> Statistics:
        """Inverse of :meth:`to_state`."""
        if state.get("format") != _FORMAT:
            raise StatisticsError(
                f"statistics file format {state.get('format')!r} is not {_FORMAT}; recollect them"
            )
        layers = {
            name: LayerStatistics(
                side=d["side"],
                gram=d["gram"],
                rows=int(d["rows"]),
                calls=int(d["calls"]),
                output_shape=tuple(d["output_shape"]),
                weight_digest=d["weight_digest"],
            )
            for name, d in state["layers"].items()
        }
        return cls(
            layers=layers,
            num_samples=int(state["num_samples"]),
            example_input=state["example_input"],
            version=state["version"],
            extra=dict(state.get("extra", {})),
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write to ``path`` atomically (temporary file + rename)."""
        atomic_torch_save(self.to_state(), Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Statistics:
        """Read statistics written by :meth:`save` (``weights_only=True``)."""
        state = torch.load(Path(path), map_location=map_location, weights_only=True)
        return cls.from_state(state)

    def all_reduce(self) -> Statistics:
        """Sum the statistics over the processes of ``torch.distributed`` (in place).

        Every process must have collected the same layers on its own shard of the data; after
        the call each holds the statistics of the whole calibration set.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        counts = torch.tensor(
            [self.num_samples]
            + [st.rows for st in self.layers.values()]
            + [st.calls for st in self.layers.values()],
            dtype=torch.float64,
        )
        device = next(iter(self.layers.values())).gram.device if self.layers else "cpu"
        counts = counts.to(device)
        dist.all_reduce(counts)
        for st in self.layers.values():
            dist.all_reduce(st.gram)
        n = len(self.layers)
        values = counts.cpu().tolist()
        self.num_samples = int(round(values[0]))
        for i, st in enumerate(self.layers.values()):
            st.rows = int(round(values[1 + i]))
            st.calls = int(round(values[1 + n + i]))
        return self


def iter_batches(
    data: Iterable | Tensor, device: torch.device, batch_size: int = 64
) -> Iterator[Tensor]:
    """Model inputs from ``data``, moved to ``device``.

    Args:
        data: an iterable of batches — each a tensor, or a tuple/list whose first element is the
            input (as a ``DataLoader`` yields) — or a single tensor of samples, split along dim 0
            into batches of ``batch_size``.
    """
    if isinstance(data, Tensor):
        data = data.split(batch_size)
    for batch in data:
        if isinstance(batch, (tuple, list)):
            if not batch:
                raise BALFError("a calibration batch is an empty tuple/list")
            batch = batch[0]
        if not isinstance(batch, Tensor):
            raise BALFError(
                f"calibration batches must be tensors or (input, ...) tuples, got "
                f"{type(batch).__name__}"
            )
        yield batch.to(device, non_blocking=True)


def _distributed_world_size() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Per-batch products run in the layer's dtype, but never below float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class _Accumulator:
    """Forward hook adding one layer's Gram matrix of each call to a float64 accumulator."""

    def __init__(self, name: str, module: nn.Module, side: Side) -> None:
        geo = geometry_of(module)
        size = geo.in_dim if side == "input" else geo.out_dim
        w = module.weight
        self.module = module
        self.side = side
        self.stats = LayerStatistics(
            side=side,
            gram=torch.zeros(geo.groups, size, size, dtype=torch.float64, device=w.device),
            weight_digest=tensor_digest(w),
        )
        self.name = name

    def __call__(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        st = self.stats
        dtype = _compute_dtype(output.dtype)
        if self.side == "output":
            gram = output_gram(module, output, dtype)
        else:
            gram = input_gram(module, inputs[0], dtype)
        st.gram += gram.to(torch.float64)
        st.rows += rows_of_call(module, output)
        st.calls += 1
        st.output_shape = tuple(output.shape[1:])


@contextlib.contextmanager
def _calibration_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no grad for the duration, restored afterwards even on error."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def collect_statistics(
    model: nn.Module,
    data: Iterable | Tensor,
    layers: Iterable[str] | None = None,
    *,
    side: Side | None = None,
    batch_size: int = 64,
    progress: bool = True,
    distributed: bool | None = None,
) -> Statistics:
    """Run the calibration data through ``model`` once and accumulate per-layer Gram matrices.

    Args:
        model: the network, on any device; it is left in its original mode.
        data: iterable of batches (tensor or tuple/list whose first element is the input), or a
            tensor of samples ``(N, ...)`` split into batches of ``batch_size``.
        layers: module names (default: every supported layer, see
            :func:`balf.register_layer_adapter`).
        side: force ``"input"`` or ``"output"`` statistics for every layer (both give the same
            decomposition); ``None`` picks the cheaper side per layer (input only when D < K).
        progress: show a tqdm bar over batches.
        distributed: sum the statistics over the processes of ``torch.distributed`` (each
            process passes its own shard of the data) before returning; ``None`` does so
            whenever a process group with more than one process is initialised.

    Returns:
        :class:`Statistics` with one float64 Gram matrix batch per layer.

    Raises:
        BALFError: empty data, unknown layer names, or an invalid ``side``.
        StatisticsError: NaN/Inf in a layer's statistics.

    Example:
        >>> stats = balf.collect_statistics(model, calib_loader)
        >>> stats.save("stats.pt")
    """
    if side is not None and side not in SIDES:
        raise BALFError(f"side must be 'input', 'output' or None, got {side!r}")
    targets, _ = resolve_layers(model, layers)
    if not targets:
        raise BALFError(
            "the model has no supported layer (e.g. Conv2d, Linear) to collect statistics for"
        )
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")

    accumulators = {
        name: _Accumulator(name, m, side or geometry_of(m).preferred_side())
        for name, m in targets.items()
    }
    handles = [m.register_forward_hook(accumulators[n]) for n, m in targets.items()]
    num_samples = 0
    example = None
    total = len(data) if hasattr(data, "__len__") and not isinstance(data, Tensor) else None
    try:
        with _calibration_mode(model):
            bar = tqdm(
                iter_batches(data, device, batch_size),
                total=total,
                desc="calibration",
                unit="batch",
                disable=not progress,
            )
            for x in bar:
                if x.shape[0] == 0:
                    continue
                if example is None:
                    example = x[:1].detach().cpu().clone()
                model(x)
                num_samples += x.shape[0]
    finally:
        for h in handles:
            h.remove()
    layer_stats = {name: acc.stats for name, acc in accumulators.items()}
    stats = Statistics(layers=layer_stats, num_samples=num_samples, example_input=example)
    if distributed is None:
        distributed = _distributed_world_size() > 1
    if distributed:
        stats.all_reduce()
    if stats.num_samples == 0:
        raise BALFError("the calibration data is empty: pass at least one non-empty batch")
    for name, st in layer_stats.items():
        if st.calls == 0:
            raise StatisticsError(
                f"layer {name!r} was never called during calibration; exclude it via `layers=`"
            )
    stats.check_finite()
    log.info("collected statistics for %d layers over %d samples", len(layer_stats), num_samples)
    return stats
