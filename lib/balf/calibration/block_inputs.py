"""The inputs of a chain of blocks: captured once at the first block, then carried block by block.

A *chain of blocks* is a list of submodules ``B_0 … B_{n-1}`` that every forward pass calls once
each, in order, with ``B_{i+1}``'s first positional input equal to ``B_i``'s output (its first
element when a block returns a tuple): the decoder layers of a language model, the encoder layers
of a ViT or BERT, the stages of a ResNet, the inverted residuals of a MobileNetV2.

* :func:`check_chain` runs the model once on one batch and checks that contract, and tells which
  target layers run before the first block (the *prefix*);
* :func:`capture_first_inputs` runs the model up to ``B_0`` on every calibration batch (the rest
  of the forward is skipped) and keeps ``B_0``'s arguments: :class:`BlockInputs`, one entry per
  batch, with the hidden state (``(B, …)``) on the activation device and the other arguments
  (attention masks, position embeddings) as they were passed;
* :func:`run_block` runs one block on every batch and returns its outputs as the next block's
  inputs;
* :func:`run_tail` runs the layers after the last block on the carried outputs, replacing every
  block by a stub that returns them (the layers before the blocks are recomputed, not the blocks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from balf._device import model_device
from balf._eval_mode import eval_mode
from balf.calibration.batches import (
    as_call,
    batch_size_of,
    first_call_sample,
    first_samples,
    split_batches,
    to_device,
)
from balf.errors import BALFError

__all__ = [
    "BlockInputs",
    "ChainInfo",
    "capture_first_inputs",
    "check_chain",
    "run_block",
    "run_tail",
]


@dataclass(frozen=True)
class ChainInfo:
    """What :func:`check_chain` learnt: the target layers before the first block (in call
    order) and whether the blocks return tuples (hidden state first)."""

    prefix: list[str]
    tuple_output: bool


class _Stop(Exception):
    """Raised by the pre-hook of the first block to end the forward pass there."""


@dataclass
class BlockInputs:
    """What every calibration batch passes to a block.

    Attributes:
        hidden: per batch, the block's first positional input ``(B, …)`` on the activation device.
        args: per batch, the other positional arguments (as passed).
        kwargs: per batch, the keyword arguments (tensors on the activation device).
        tuple_output: whether the blocks return tuples (hidden state first).
        num_samples: samples over all batches.
        example: ``(example_input, example_kwargs)`` of the first sample (FLOP counts).
    """

    hidden: list[Tensor] = field(default_factory=list)
    args: list[tuple] = field(default_factory=list)
    kwargs: list[dict] = field(default_factory=list)
    tuple_output: bool = False
    num_samples: int = 0
    example: tuple[Any, dict] | None = None

    def calls(self, device: torch.device) -> Iterator[tuple[tuple, dict]]:
        """``(args, kwargs)`` of the block call of each batch, on ``device``."""
        for h, a, k in zip(self.hidden, self.args, self.kwargs, strict=True):
            yield (h.to(device), *to_device(a, device)), to_device(k, device)

    def with_hidden(self, hidden: list[Tensor]) -> BlockInputs:
        """The same calls with new hidden states (the previous block's outputs)."""
        return BlockInputs(
            hidden, self.args, self.kwargs, self.tuple_output, self.num_samples, self.example
        )


def _call(model: nn.Module, batch: Any, forward: Callable | None, device: torch.device) -> int:
    """Run ``model`` on one batch; returns its number of samples (0: skipped, nothing run)."""
    if forward is None:
        args, kwargs = as_call(batch)
        n = batch_size_of((args, kwargs))
        if n:
            model(*to_device(args, device), **to_device(kwargs, device))
        return n
    n = batch_size_of(batch)
    if n:
        forward(model, to_device(batch, device))
    return n


def _hidden_of(output: Any, name: str) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise BALFError(
        f"block {name!r} returned {type(output).__name__}; a block must return a tensor or a "
        "tuple whose first element is the hidden state"
    )


_CACHE_ARGUMENTS = ("cache", "past_key_values", "past_key_value", "layer_past")


def _check_kwargs(name: str, kwargs: dict) -> None:
    # A key/value cache passed to the blocks would grow with every replayed call and make the
    # statistics wrong without any error (transformers' decoders create one when use_cache=True;
    # the argument is `cache` in transformers 5, `past_key_values` before).
    if any(kwargs.get(k) is not None for k in _CACHE_ARGUMENTS):
        raise BALFError(
            f"block {name!r} receives a key/value cache (past_key_values); calibrate without "
            "one: forward=lambda model, batch: model(**batch, use_cache=False)"
        )


def check_chain(
    model: nn.Module,
    blocks: dict[str, nn.Module],
    targets: dict[str, nn.Module],
    batch: Any,
    forward: Callable | None,
) -> ChainInfo:
    """Run ``model`` once on ``batch`` and check that ``blocks`` form a chain (module docstring).

    Returns:
        :class:`ChainInfo`: the target layers outside the blocks that run before the first
        block, and whether the blocks return tuples.

    Raises:
        BALFError: a block is called never or several times, out of order, without a positional
            input, or with an input that is not the previous block's output.
    """
    names = list(blocks)
    seen: list[tuple[str, Tensor, Tensor]] = []
    order: list[str] = []
    started = [False]
    tuples = [False]

    def pre(name):
        def hook(module, args, kwargs):
            if not args or not isinstance(args[0], Tensor):
                raise BALFError(
                    f"block {name!r} is called without a positional tensor input; block-by-block "
                    "calibration carries the first positional argument from block to block"
                )
            _check_kwargs(name, kwargs)
            started[0] = True
            seen.append((name, args[0], None))

        return hook

    def post(name):
        def hook(module, args, kwargs, output):
            n, x, _ = seen[-1]
            seen[-1] = (n, x, _hidden_of(output, name))
            tuples[0] = not isinstance(output, Tensor)

        return hook

    def layer_hook(name):
        return lambda *_: None if started[0] else order.append(name)

    inside = {t for t in targets if any(t == b or t.startswith(b + ".") for b in names)}
    handles = []
    try:
        for name, block in blocks.items():
            handles.append(block.register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(block.register_forward_hook(post(name), with_kwargs=True))
        for name, layer in targets.items():
            if name not in inside:
                handles.append(layer.register_forward_hook(layer_hook(name)))
        with eval_mode(model):
            _call(model, batch, forward, model_device(model))
    finally:
        for h in handles:
            h.remove()
    called = [s[0] for s in seen]
    if called != names:
        raise BALFError(
            f"the blocks must each run once per forward pass, in the given order {names}; "
            f"they ran as {called} (pass blocks=[...] naming a chain of blocks)"
        )
    for (prev, _, out), (name, x, _) in zip(seen, seen[1:], strict=False):
        if not (x is out or (x.shape == out.shape and torch.equal(x, out))):
            raise BALFError(
                f"the input of block {name!r} is not the output of block {prev!r}: something "
                "runs between them; name blocks that follow each other directly"
            )
    return ChainInfo(list(dict.fromkeys(order)), tuples[0])


def capture_first_inputs(
    model: nn.Module,
    first: nn.Module,
    data: Iterable | Tensor,
    *,
    forward: Callable | None,
    batch_size: int,
    max_batches: int | None,
    activation_device: torch.device,
    progress_bar: Callable[[Iterator], Iterator],
    tuple_output: bool = False,
) -> BlockInputs:
    """Run ``model`` up to block ``first`` on every batch and keep that block's arguments.

    The forward pass stops at the block (a pre-hook raises), so only what runs before it is
    computed; forward hooks on earlier layers (the prefix's statistics) see every batch.
    """
    out = BlockInputs(tuple_output=tuple_output)
    device = model_device(model)

    def hook(module, args, kwargs):
        _check_kwargs("first block", kwargs)
        out.hidden.append(args[0].detach().to(activation_device))
        out.args.append(to_device(tuple(args[1:]), activation_device))
        out.kwargs.append(to_device(dict(kwargs), activation_device))
        raise _Stop

    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with eval_mode(model):
            for batch in progress_bar(split_batches(data, batch_size, max_batches)):
                if out.example is None:
                    out.example = _example(batch, forward)
                try:
                    n = _call(model, batch, forward, device)
                except _Stop:
                    n = out.hidden[-1].shape[0]
                else:
                    if n:
                        raise BALFError("the first block was not called in a forward pass")
                out.num_samples += n
    finally:
        handle.remove()
    if out.num_samples == 0:
        raise BALFError("the calibration data is empty: pass at least one non-empty batch")
    return out


def _example(batch: Any, forward: Callable | None) -> tuple[Any, dict]:
    if forward is not None:
        return first_samples(batch, batch_size_of(batch)), {}
    args, kwargs = as_call(batch)
    return first_call_sample(args, kwargs, batch_size_of((args, kwargs)))


def run_block(
    block: nn.Module,
    name: str,
    inputs: BlockInputs,
    activation_device: torch.device,
    keep: bool = True,
) -> list[Tensor]:
    """Run ``block`` on every batch of ``inputs``.

    Returns:
        Its hidden outputs (``(B, …)`` per batch) on the activation device; ``[]`` unless
        ``keep`` (a run for statistics only).
    """
    device = model_device(block)
    outputs = []
    with eval_mode(block):
        for args, kwargs in inputs.calls(device):
            hidden = _hidden_of(block(*args, **kwargs), name)
            if keep:
                outputs.append(hidden.detach().to(activation_device))
    return outputs


class _Replay(nn.Module):
    """Stands in for a block during :func:`run_tail`: returns the carried output of the batch."""

    def __init__(self, outputs: list[Tensor], tuple_output: bool, device: torch.device) -> None:
        super().__init__()
        self.outputs, self.tuple_output, self.device, self.index = outputs, tuple_output, device, 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.outputs[self.index].to(self.device)
        return (out,) if self.tuple_output else out


def run_tail(
    model: nn.Module,
    blocks: Sequence[str],
    outputs: list[Tensor],
    inputs: BlockInputs,
    data: Iterable | Tensor,
    *,
    forward: Callable | None,
    batch_size: int,
    max_batches: int | None,
) -> None:
    """Run ``model`` on every batch with each block replaced by a stub returning ``outputs``.

    The layers after the last block then see the last block's carried outputs (forward hooks
    on them collect their statistics); the blocks themselves are not computed.
    """
    device = model_device(model)
    stub = _Replay(outputs, inputs.tuple_output, device)
    originals = {name: model.get_submodule(name) for name in blocks}
    for name in blocks:
        model.set_submodule(name, stub)
    try:
        with eval_mode(model):
            index = 0
            for batch in split_batches(data, batch_size, max_batches):
                stub.index = index
                if _call(model, batch, forward, device):
                    index += 1
    finally:
        for name, block in originals.items():
            model.set_submodule(name, block)
