"""Calibration batches: how one batch of any structure becomes a model call.

A batch is a tensor (the input), an ``(args, kwargs)`` pair (a tuple/list and a dict, for models
with several inputs), a mapping of keyword inputs (a dict, a tokenizer's ``BatchEncoding``, what
``DataCollatorWithPadding`` yields: ``model(**batch)``) or another tuple/list whose first element
is the input (``(images, labels)``, as a ``DataLoader`` yields). Nested mappings of any type
count as dicts. The helpers here split tensor data into batches, turn a
batch into the call's arguments, move nested tensors to a device, count a batch's samples and
cut it to its first sample (the example input of FLOP counts).

Samples lie along dim 0, except for sequence-first models (``nn.MultiheadAttention``,
``nn.Transformer*`` layers or RNNs with ``batch_first=False`` that receive the input as
``(L, B, ...)``): :func:`batch_dim` finds that case, and the counting and cutting helpers take
the dimension it returns.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from balf._eval_mode import eval_mode
from balf.errors import BALFError

__all__ = [
    "SequenceFirstProbe",
    "as_call",
    "batch_dim",
    "batch_size_of",
    "first_call_sample",
    "first_samples",
    "is_args_kwargs",
    "iter_batches",
    "iter_calls",
    "split_batches",
    "tensors_of",
    "to_device",
]


def split_batches(data: Iterable | Tensor, batch_size: int, max_batches: int | None) -> Iterator:
    """The batches of ``data``: a tensor ``(N, ...)`` split along dim 0 into ``(batch_size, ...)``
    pieces, or the iterable's own batches; at most ``max_batches`` of them (``None``: all).

    Raises:
        BALFError: ``max_batches`` is not a positive integer or ``None``.
    """
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
    ):
        raise BALFError(f"max_batches must be a positive integer or None, got {max_batches!r}")
    if isinstance(data, Tensor):
        data = data.split(batch_size)
    return itertools.islice(data, max_batches)


def to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor in nested tuples, lists and dicts moved to ``device``."""
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def tensors_of(obj: Any) -> Iterator[Tensor]:
    """Every tensor in a nested structure of tuples, lists and dicts, in order."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from tensors_of(v)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from tensors_of(v)


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
    argument; a mapping (a dict, a ``BatchEncoding``) gives the keyword arguments; another
    tuple/list (``(input, label)``, as a ``DataLoader`` yields) gives its first element as the
    input.

    Raises:
        BALFError: the batch has none of these structures.
    """
    if isinstance(batch, Tensor):
        return (batch,), {}
    if is_args_kwargs(batch):
        return tuple(batch[0]), dict(batch[1])
    if isinstance(batch, Mapping):
        if not batch:
            raise BALFError("a calibration batch is an empty mapping")
        return (), dict(batch)
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise BALFError("a calibration batch is an empty tuple/list")
        if isinstance(batch[0], Tensor):
            return (batch[0],), {}
    raise BALFError(
        "calibration batches must be tensors, (input, ...) tuples, (args, kwargs) pairs or "
        "mappings of keyword inputs, got "
        f"{type(batch).__name__}; for other batches pass forward=lambda model, batch: ..."
    )


def iter_calls(
    data: Iterable | Tensor,
    device: torch.device,
    batch_size: int = 64,
    max_batches: int | None = None,
) -> Iterator[tuple[tuple, dict]]:
    """``(args, kwargs)`` of the model call for each batch of ``data`` (see :func:`as_call`)."""
    for batch in split_batches(data, batch_size, max_batches):
        args, kwargs = as_call(batch)
        yield to_device(args, device), to_device(kwargs, device)


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


class _Seen(Exception):
    """Ends a probing forward pass at the first sequence-first module (see :func:`batch_dim`)."""


class SequenceFirstProbe:
    """While active, records the input shape of the first call of a module with
    ``batch_first=False`` (``nn.MultiheadAttention`` and balf's unpacked form of it, the
    ``nn.Transformer`` family's attention, RNNs: every module following torch's convention).

    Args:
        model: the network.
        stop: end the forward pass at that call (the context swallows the exception).
    """

    def __init__(self, model: nn.Module, stop: bool = False) -> None:
        self.modules = [m for m in model.modules() if getattr(m, "batch_first", None) is False]
        self.shape: tuple[int, ...] | None = None
        self._stop = stop
        self._handles: list = []

    def __enter__(self) -> SequenceFirstProbe:
        self._handles = [
            m.register_forward_pre_hook(self._hook, with_kwargs=True, prepend=True)
            for m in self.modules
        ]
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        for h in self._handles:
            h.remove()
        return exc_type is _Seen

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.shape is None:
            x = args[0] if args else next(iter(kwargs.values()), None)
            self.shape = tuple(x.shape) if isinstance(x, Tensor) else ()
            if self._stop:
                raise _Seen

    def dim(self, batch: Any) -> int:
        """1 when ``batch``'s first tensor has the ``(L, B)`` leading sizes of the recorded
        ``(L, B, ...)`` input, else 0 (no such module, never reached, an unbatched call, or an
        input the model transposes on the way)."""
        first = next(tensors_of(batch), None)
        if first is None or first.dim() < 2 or self.shape is None or len(self.shape) < 3:
            return 0
        return 1 if tuple(first.shape[:2]) == self.shape[:2] else 0


def batch_dim(model: nn.Module, batch: Any, run: Callable[[], Any]) -> int:
    """The dimension along which a batch's inputs hold their samples: 0, or 1 when the model
    is sequence-first and its input reaches the first sequence-first module as ``(L, B, ...)``
    (token ids ``(L, B)`` embedded on the way included).

    Args:
        model: the network.
        batch: one calibration batch (its first tensor is the input compared).
        run: runs ``model`` on ``batch``; called only when the model has a module with
            ``batch_first=False``, and only up to that module's first call.

    Returns:
        0 or 1 (see :class:`SequenceFirstProbe`).
    """
    with eval_mode(model), SequenceFirstProbe(model, stop=True) as probe:
        if probe.modules:
            run()
    return probe.dim(batch)


def batch_size_of(batch: Any, dim: int = 0) -> int:
    """Samples in a batch: the size of its first tensor along ``dim`` (see :func:`batch_dim`).

    Raises:
        BALFError: the batch holds no tensor with a batch dimension.
    """
    first = next(tensors_of(batch), None)
    if first is None or first.dim() <= dim:
        raise BALFError(
            "cannot tell the number of samples of a calibration batch: it holds no tensor with "
            "a batch dimension"
        )
    return first.shape[dim]


def _first_sample(t: Tensor, n: int, dim: int) -> Tensor:
    """Tensor ``t`` of a batch of ``n`` samples cut to its first sample.

    Along ``dim`` when ``t`` has ``n`` entries there; along dim 0 for per-sample tensors of a
    sequence-first batch (padding masks ``(B, S)``; a 2-D tensor with ``n`` entries along both
    dims is cut along dim 0 when boolean, as masks are); the first ``k`` entries of a 3-D tensor
    whose leading size is ``k·n`` (``nn.MultiheadAttention``'s ``(B·heads, L, S)`` masks, batch
    major). Other tensors are unchanged.
    """
    shape = t.shape
    along = None
    if dim == 1 and t.dim() >= 2 and shape[1] == n:
        along = 0 if shape[0] == n and t.dim() == 2 and t.dtype == torch.bool else 1
    elif t.dim() and shape[0] == n:
        along = 0
    if along == 1:
        return t[:, :1]
    if along == 0:
        return t[:1]
    if t.dim() == 3 and n > 1 and shape[0] > n and shape[0] % n == 0:
        return t[: shape[0] // n]
    return t


def first_samples(obj: Any, n: int, dim: int = 0) -> Any:
    """``obj`` with every tensor of a batch of ``n`` samples cut to its first sample, on the CPU.

    A tensor ``(n, ...)`` becomes ``(1, ...)`` (``(L, n, ...)`` becomes ``(L, 1, ...)`` when
    ``dim`` is 1, see :func:`batch_dim`); a ``(k·n, L, S)`` attention mask its first ``k``
    rows; other tensors are moved to the CPU unchanged.
    """
    if isinstance(obj, Tensor):
        cut = _first_sample(obj, n, dim)
        return obj.cpu() if cut is obj else cut.detach().cpu().clone()
    if isinstance(obj, Mapping):
        return {k: first_samples(v, n, dim) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(first_samples(v, n, dim) for v in obj)
    return obj


def first_call_sample(args: tuple, kwargs: dict, n: int, dim: int = 0) -> tuple[Any, dict]:
    """The first sample of a call of batch size ``n``: ``(example_input, example_kwargs)``.

    The example input is the single positional input ``(1, ...)`` when the call has one and no
    keyword inputs, else the tuple of positional inputs cut to one sample (along ``dim`` for
    the sequence-first inputs, see :func:`first_samples`).
    """
    example, example_kwargs = first_samples(args, n, dim), first_samples(kwargs, n, dim)
    if len(example) == 1 and not example_kwargs:
        example = example[0]
    return example, example_kwargs
