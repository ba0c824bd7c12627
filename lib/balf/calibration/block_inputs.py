"""Every block's inputs, recorded in one forward pass, then replayed block by block.

:func:`record_chain` runs the whole model on every calibration batch and records, for each block
of the chain (:mod:`balf.calibration.chain`), the arguments the model passes it: positional and
keyword arguments as they were, except that the ones taken from the previous block's output (its
hidden state; a T5 block's position bias; any ``(hidden, aux)`` element the model hands on) are
marked as *carried* by their position in that output. So each block gets its own arguments —
Qwen2's sliding-window layers their mask, its full-attention layers theirs — and a replay carries
what the (compressed) previous block really returned.

:func:`run_block` then runs one block on every batch: carried arguments from the previous block's
outputs, the rest as recorded, the batch's padding mask set for the statistics hooks
(:mod:`balf.calibration.padding`); it returns the outputs the next block takes.

Memory: the recorded arguments of every block for every batch, on the activation device, each
distinct tensor once per batch (blocks passed the same mask or position embeddings share it),
plus the carried outputs of one block boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from balf._device import model_device
from balf._eval_mode import eval_mode
from balf.calibration.chain import check_kwargs, output_elements
from balf.calibration.padding import PaddingMask, attention_mask_of
from balf.errors import BALFError

__all__ = ["BatchInputs", "ChainRecord", "record_chain", "run_block"]

Carried = list[dict[int, Tensor]]
"""Per batch, ``{position in the block's output: tensor}`` of what the next block takes."""


@dataclass(frozen=True)
class _FromPrevious:
    """Placeholder of a recorded argument: element ``index`` of the previous block's output."""

    index: int


@dataclass
class BatchInputs:
    """One calibration batch's record.

    Attributes:
        calls: per block, ``(args, kwargs)`` with :class:`_FromPrevious` placeholders.
        first: the first block's carried inputs, ``{0: hidden (B, …)}``.
        mask: the batch's padding mask ``(B, L)`` (``None``: no padding).
        samples: samples in the batch.
    """

    calls: list[tuple[tuple, dict]] = field(default_factory=list)
    first: dict[int, Tensor] = field(default_factory=dict)
    mask: Tensor | None = None
    samples: int = 0

    def needs(self, block: int) -> set[int]:
        """The output positions of block ``block - 1`` that block ``block`` takes."""
        if block >= len(self.calls):
            return set()
        args, kwargs = self.calls[block]
        return {p.index for p in _placeholders((args, kwargs))}


@dataclass
class ChainRecord:
    """What :func:`record_chain` recorded: one :class:`BatchInputs` per batch."""

    batches: list[BatchInputs] = field(default_factory=list)

    @property
    def num_samples(self) -> int:
        return sum(b.samples for b in self.batches)

    def first_inputs(self) -> Carried:
        """The first block's carried inputs of every batch."""
        return [dict(b.first) for b in self.batches]


def _placeholders(obj: Any) -> Iterator[_FromPrevious]:
    if isinstance(obj, _FromPrevious):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _placeholders(v)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from _placeholders(v)


def _template(obj: Any, previous: list[Any], memo: dict[int, Tensor], device: torch.device) -> Any:
    """``obj`` with every tensor that is an element of ``previous`` replaced by a placeholder and
    every other tensor moved to ``device`` (each distinct tensor once: ``memo``)."""
    if isinstance(obj, Tensor):
        for i, element in enumerate(previous):
            if element is obj:
                return _FromPrevious(i)
        if id(obj) not in memo:
            memo[id(obj)] = obj.detach().to(device)
        return memo[id(obj)]
    if isinstance(obj, Mapping):
        return {k: _template(v, previous, memo, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_template(v, previous, memo, device) for v in obj)
    return obj


def _fill(obj: Any, carried: Mapping[int, Tensor], device: torch.device) -> Any:
    """A recorded argument structure with placeholders filled from ``carried``, on ``device``."""
    if isinstance(obj, _FromPrevious):
        return carried[obj.index].to(device)
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: _fill(v, carried, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_fill(v, carried, device) for v in obj)
    return obj


class _StopForward(Exception):
    """Raised by the last block's recording hook to end a forward pass there."""


def record_chain(
    model: nn.Module,
    blocks: Mapping[str, nn.Module],
    batches: Iterable[Any],
    run: Callable[[nn.Module, Any], Any],
    samples_of: Callable[[Any], int],
    *,
    activation_device: torch.device,
    padding: PaddingMask | None = None,
    stop_at_last: bool = False,
) -> ChainRecord:
    """Run ``model`` on every batch (``run(model, batch)``, batches on the model's device) and
    record every block's arguments (module docstring). Statistics hooks of other layers see the
    whole forward pass (``padding`` gets each batch's mask while it runs) — unless
    ``stop_at_last``: then each forward pass stops once the last block's arguments are recorded
    (nothing after it runs: no head, no statistics of later layers).

    Raises:
        BALFError: a block is skipped, called twice or out of order on some batch, receives a
            key/value cache, or the data is empty.
    """
    names = list(blocks)
    index = {name: i for i, name in enumerate(names)}
    record = ChainRecord()
    state: dict[str, Any] = {}

    def pre(name):
        def hook(module, args, kwargs):
            check_kwargs(name, kwargs)
            i, entry = index[name], state["entry"]
            if len(entry.calls) != i:
                raise BALFError(
                    f"block {name!r} ran out of order or twice in a forward pass; the blocks "
                    f"must each run once per forward pass, in the order {names}"
                )
            previous = state["previous"]
            if i == 0:
                entry.first[0] = args[0].detach().to(activation_device)
            call_args = (_FromPrevious(0), *_template(tuple(args[1:]), previous, state["memo"],
                                                      activation_device))  # fmt: skip
            call_kwargs = _template(dict(kwargs), previous, state["memo"], activation_device)
            entry.calls.append((call_args, call_kwargs))
            if stop_at_last and i == len(names) - 1:
                raise _StopForward

        return hook

    def post(name):
        def hook(module, args, kwargs, output):
            state["previous"] = output_elements(output, name)

        return hook

    handles = []
    for name, block in blocks.items():
        handles.append(block.register_forward_pre_hook(pre(name), with_kwargs=True))
        handles.append(block.register_forward_hook(post(name), with_kwargs=True))
    try:
        with eval_mode(model):
            for batch in batches:
                entry = BatchInputs(mask=attention_mask_of(batch), samples=samples_of(batch))
                state.update(entry=entry, previous=[], memo={})
                if padding is not None:
                    padding.current = entry.mask
                try:
                    run(model, batch)
                except _StopForward:
                    pass
                if len(entry.calls) != len(names):
                    raise BALFError(
                        f"only {len(entry.calls)} of the {len(names)} blocks ran in a forward "
                        f"pass; the blocks must each run once per forward pass ({names})"
                    )
                if entry.mask is not None:
                    entry.mask = entry.mask.to(activation_device)
                record.batches.append(entry)
    finally:
        state.clear()
        if padding is not None:
            padding.current = None
        for h in handles:
            h.remove()
    if record.num_samples == 0:
        raise BALFError("the calibration data is empty: pass at least one non-empty batch")
    return record


def run_block(
    block: nn.Module,
    position: int,
    name: str,
    record: ChainRecord,
    carried: Carried,
    activation_device: torch.device,
    *,
    padding: PaddingMask | None = None,
    keep: bool = True,
) -> Carried:
    """Run block number ``position`` on every batch of ``record``, its carried arguments taken
    from ``carried`` (the previous block's outputs, or :meth:`ChainRecord.first_inputs`).

    Returns:
        Per batch, the outputs of this block that the next block takes, on the activation
        device (``[]`` unless ``keep``: a run for statistics only).
    """
    device = model_device(block)
    out: Carried = []
    with eval_mode(block):
        for entry, inputs in zip(record.batches, carried, strict=True):
            args, kwargs = entry.calls[position]
            if padding is not None:
                padding.current = entry.mask
            try:
                output = block(*_fill(args, inputs, device), **_fill(kwargs, inputs, device))
            finally:
                if padding is not None:
                    padding.current = None
            if keep:
                elements = output_elements(output, name)
                needed = entry.needs(position + 1)
                out.append({i: elements[i].detach().to(activation_device) for i in needed})
    return out
