"""Calibration statistics (method §2): one forward pass, one Gram matrix per layer.

For every target layer the cheaper side is accumulated in float64:

* ``"output"`` — ``Γ_g = Y_gᵀ Y_g`` (K×K) from the pre-bias output in a forward hook, no im2col;
* ``"input"``  — ``C_g = X_gᵀ X_g`` (D×D), through chunked im2col for convolutions; only when D < K.

Activations are never stored: each call's product is added to the accumulator and dropped.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._io import atomic_torch_save
from ._mode import eval_mode
from ._version import __version__
from .errors import BALFError, StatisticsError
from .hashing import tensor_digest, update_with_tensor
from .modes import SIDES, Side
from .representation import geometry_of, input_gram, output_gram, rows_of_call
from .targets import resolve_layers

__all__ = [
    "LayerStatistics",
    "Statistics",
    "as_call",
    "collect_statistics",
    "iter_batches",
    "iter_calls",
]

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
        example_input: one calibration input, ``(1, ...)`` on the CPU, for FLOP counting (a
            tuple of positional inputs for ``(args, kwargs)`` batches, the batch itself cut to
            one sample with a ``forward`` callable).
        example_kwargs: keyword inputs of that example (``(args, kwargs)`` batches).
        version: library version that collected them.
    """

    layers: dict[str, LayerStatistics]
    num_samples: int
    example_input: Tensor | None = None
    version: str = __version__
    extra: dict = field(default_factory=dict)
    example_kwargs: dict = field(default_factory=dict)

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
            "example_kwargs": dict(self.example_kwargs),
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
            example_kwargs=dict(state.get("example_kwargs", {})),
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
    data: Iterable | Tensor,
    device: torch.device,
    batch_size: int = 64,
    max_batches: int | None = None,
) -> Iterator[Tensor]:
    """Model inputs from ``data``, moved to ``device``.

    Args:
        data: an iterable of batches — each a tensor, or a tuple/list whose first element is the
            input (as a ``DataLoader`` yields) — or a single tensor of samples, split along dim 0
            into batches of ``batch_size``.
        max_batches: stop after this many batches (``None``: all).
    """
    for args, _ in iter_calls(data, device, batch_size, max_batches):
        yield args[0]


def _batches(data: Iterable | Tensor, batch_size: int, max_batches: int | None) -> Iterator:
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
    ):
        raise BALFError(f"max_batches must be a positive integer or None, got {max_batches!r}")
    if isinstance(data, Tensor):
        data = data.split(batch_size)
    return itertools.islice(data, max_batches)


def _to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor in nested tuples, lists and dicts moved to ``device``."""
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _tensors(obj: Any) -> Iterator[Tensor]:
    """Every tensor in a nested structure, in order."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from _tensors(v)


def is_args_kwargs(batch: Any) -> bool:
    """Whether a batch is an ``(args, kwargs)`` pair: a tuple/list and a dict."""
    return (
        isinstance(batch, (tuple, list))
        and len(batch) == 2
        and isinstance(batch[0], (tuple, list))
        and isinstance(batch[1], dict)
    )


def as_call(batch: Any) -> tuple[tuple, dict]:
    """The positional and keyword arguments of the model call for one batch.

    A tensor is the input; an ``(args, kwargs)`` pair (a tuple/list and a dict) gives every
    argument; another tuple/list (``(input, label)``, as a ``DataLoader`` yields) gives its
    first element as the input.
    """
    if isinstance(batch, Tensor):
        return (batch,), {}
    if is_args_kwargs(batch):
        return tuple(batch[0]), dict(batch[1])
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise BALFError("a calibration batch is an empty tuple/list")
        if isinstance(batch[0], Tensor):
            return (batch[0],), {}
    raise BALFError(
        "calibration batches must be tensors, (input, ...) tuples or (args, kwargs) pairs, got "
        f"{type(batch).__name__}; for other batches pass forward=lambda model, batch: ..."
    )


def iter_calls(
    data: Iterable | Tensor,
    device: torch.device,
    batch_size: int = 64,
    max_batches: int | None = None,
) -> Iterator[tuple[tuple, dict]]:
    """``(args, kwargs)`` of the model call for each batch of ``data`` (see :func:`as_call`)."""
    for batch in _batches(data, batch_size, max_batches):
        args, kwargs = as_call(batch)
        yield _to_device(args, device), _to_device(kwargs, device)


def batch_size_of(batch: Any) -> int:
    """Samples in a batch: the leading size of its first tensor."""
    first = next(_tensors(batch), None)
    if first is None or first.dim() == 0:
        raise BALFError(
            "cannot tell the number of samples of a calibration batch: it holds no tensor with "
            "a batch dimension"
        )
    return first.shape[0]


def first_samples(obj: Any, n: int) -> Any:
    """``obj`` with every tensor whose leading size is ``n`` cut to its first sample, on the CPU."""
    if isinstance(obj, Tensor):
        return obj[:1].detach().cpu().clone() if obj.dim() and obj.shape[0] == n else obj.cpu()
    if isinstance(obj, dict):
        return {k: first_samples(v, n) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(first_samples(v, n) for v in obj)
    return obj


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


def collect_statistics(
    model: nn.Module,
    data: Iterable | Tensor,
    layers: Iterable[str] | None = None,
    *,
    side: Side | None = None,
    batch_size: int = 64,
    progress: bool = True,
    distributed: bool | None = None,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    max_batches: int | None = None,
) -> Statistics:
    """Run the calibration data through ``model`` once and accumulate per-layer Gram matrices.

    Args:
        model: the network, on any device; it is left in its original mode.
        data: iterable of batches, or a tensor of samples ``(N, ...)`` split into batches of
            ``batch_size``. A batch is a tensor (the input), an ``(args, kwargs)`` pair (a
            tuple/list and a dict: ``model(*args, **kwargs)``, for models with several inputs),
            or another tuple/list whose first element is the input (``(images, labels)``).
        layers: module names (default: every supported layer, see
            :func:`balf.register_layer_adapter`).
        side: force ``"input"`` or ``"output"`` statistics for every layer (both give the same
            decomposition); ``None`` picks the cheaper side per layer (input only when D < K).
        progress: show a tqdm bar over batches.
        distributed: sum the statistics over the processes of ``torch.distributed`` (each
            process passes its own shard of the data) before returning; ``None`` does so
            whenever a process group with more than one process is initialised.
        forward: ``forward(model, batch)`` runs the model on one batch of any structure
            (e.g. a dict); tensors in the batch are moved to the model's device first, and
            the leading size of its first tensor counts its samples.
        max_batches: use at most this many batches (needed for an endless iterable).

    Returns:
        :class:`Statistics` with one float64 Gram matrix batch per layer; ``extra["data_digest"]``
        is a digest of every calibration tensor seen.

    Raises:
        BALFError: empty data, unknown layer names, or an invalid ``side``.
        StatisticsError: NaN/Inf in a layer's statistics.

    Warns:
        UserWarning: every floating-point calibration input is zero.

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
    example_kwargs: dict = {}
    digest = hashlib.blake2b(digest_size=16)
    floating = nonzero = False
    try:
        total = None if isinstance(data, Tensor) else len(data)
    except TypeError:
        total = None
    if total is not None and max_batches is not None:
        total = min(total, max_batches)
    try:
        with eval_mode(model):
            bar = tqdm(
                _batches(data, batch_size, max_batches),
                total=total,
                desc="calibration",
                unit="batch",
                disable=not progress,
            )
            for batch in bar:
                if forward is None:
                    args, kwargs = as_call(batch)
                    batch = (args, kwargs)
                n = batch_size_of(batch)
                if n == 0:
                    continue
                for t in _tensors(batch):
                    update_with_tensor(digest, t)
                    if t.is_floating_point() or t.is_complex():
                        floating = True
                        nonzero = nonzero or bool(t.any())
                batch = _to_device(batch, device)
                if forward is not None:
                    if example is None:
                        example = first_samples(batch, n)
                    forward(model, batch)
                else:
                    args, kwargs = batch
                    if example is None:
                        example = first_samples(args, n)
                        example_kwargs = first_samples(kwargs, n)
                        if len(example) == 1 and not example_kwargs:
                            example = example[0]
                    model(*args, **kwargs)
                num_samples += n
    finally:
        for h in handles:
            h.remove()
    layer_stats = {name: acc.stats for name, acc in accumulators.items()}
    stats = Statistics(
        layers=layer_stats,
        num_samples=num_samples,
        example_input=example,
        extra={"data_digest": digest.hexdigest()},
        example_kwargs=example_kwargs,
    )
    if distributed is None:
        distributed = _distributed_world_size() > 1
    if distributed:
        stats.all_reduce()
    if stats.num_samples == 0:
        raise BALFError("the calibration data is empty: pass at least one non-empty batch")
    if floating and not nonzero:
        warnings.warn(
            "the calibration inputs are all zero: the statistics carry no information about "
            "the data (check the data loading and normalisation)",
            UserWarning,
            stacklevel=2,
        )
    for name, st in layer_stats.items():
        if st.calls == 0:
            raise StatisticsError(
                f"layer {name!r} was never called during calibration; exclude it via `layers=`"
            )
    stats.check_finite()
    log.info("collected statistics for %d layers over %d samples", len(layer_stats), num_samples)
    return stats
