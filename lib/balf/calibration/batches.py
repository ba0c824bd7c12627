"""Calibration batches: how one batch of any structure becomes a model call.

A batch is a tensor (the input), an ``(args, kwargs)`` pair (a tuple/list and a dict, for models
with several inputs), a mapping of keyword inputs (a dict, a tokenizer's ``BatchEncoding``, what
``DataCollatorWithPadding`` yields: ``model(**batch)``) or another tuple/list whose first element
is the input (``(images, labels)``, as a ``DataLoader`` yields). Nested mappings of any type
count as dicts. The helpers here split tensor data into batches, turn a
batch into the call's arguments, move nested tensors to a device, count a batch's samples and
cut it to its first sample (the example input of FLOP counts).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from balf.errors import BALFError

__all__ = [
    "as_call",
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


def batch_size_of(batch: Any) -> int:
    """Samples in a batch: the leading size of its first tensor.

    Raises:
        BALFError: the batch holds no tensor with a batch dimension.
    """
    first = next(tensors_of(batch), None)
    if first is None or first.dim() == 0:
        raise BALFError(
            "cannot tell the number of samples of a calibration batch: it holds no tensor with "
            "a batch dimension"
        )
    return first.shape[0]


def first_samples(obj: Any, n: int) -> Any:
    """``obj`` with every tensor whose leading size is ``n`` cut to its first sample, on the CPU.

    A tensor ``(n, ...)`` becomes ``(1, ...)``; other tensors are moved to the CPU unchanged.
    """
    if isinstance(obj, Tensor):
        return obj[:1].detach().cpu().clone() if obj.dim() and obj.shape[0] == n else obj.cpu()
    if isinstance(obj, Mapping):
        return {k: first_samples(v, n) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(first_samples(v, n) for v in obj)
    return obj


def first_call_sample(args: tuple, kwargs: dict, n: int) -> tuple[Any, dict]:
    """The first sample of a call of batch size ``n``: ``(example_input, example_kwargs)``.

    The example input is the single positional input ``(1, ...)`` when the call has one and no
    keyword inputs, else the tuple of positional inputs cut to one sample.
    """
    example, example_kwargs = first_samples(args, n), first_samples(kwargs, n)
    if len(example) == 1 and not example_kwargs:
        example = example[0]
    return example, example_kwargs
