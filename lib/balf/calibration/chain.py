"""A chain of blocks, checked on one batch: the order of the blocks and where each layer is called.

A *chain of blocks* is a list of submodules ``B_0 … B_{n-1}`` that every forward pass calls once
each, in order, with ``B_{i+1}``'s first positional input equal to ``B_i``'s output (its first
element when a block returns a tuple): the decoder layers of a language model, the encoder layers
of a ViT, BERT or T5, the stages of a ResNet, the inverted residuals of a MobileNetV2. Blocks may
take other arguments (attention masks, position embeddings, a T5 block's position bias) that the
model computes per block or passes on from the previous block's output.

:func:`check_chain` runs the model once on one batch, checks that contract and sorts the chosen
layers by *when* they are called (block by block calibrates each group differently, see
:mod:`balf.pipeline.block_by_block`): only before the first block (``prefix``), only while one
block runs (that block's ``members``), only after the last block (``tail``), or in several of these
places — a module shared by two blocks, a projection used before and after the chain — or not on
this batch (``shared``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from balf._eval_mode import eval_mode
from balf.errors import BALFError

__all__ = ["ChainInfo", "check_chain", "check_kwargs", "output_elements"]

_PREFIX, _TAIL, _BETWEEN = "<prefix>", "<tail>", "<between blocks>"


@dataclass(frozen=True)
class ChainInfo:
    """Where :func:`check_chain` saw each chosen layer called.

    Attributes:
        prefix: layers called only before the first block, in model order.
        members: for each block, the layers called only while it runs, in model order.
        tail: layers called only after the last block, in model order.
        shared: every other layer (called in several of those places, between two blocks, or not
            on the checked batch), in model order.
    """

    prefix: list[str]
    members: dict[str, list[str]]
    tail: list[str]
    shared: list[str]


def output_elements(output: Any, name: str) -> list[Any]:
    """A block's output as a list: ``[tensor]``, or the elements of a tuple/list whose first
    element is the hidden state.

    Raises:
        BALFError: the block returned something else.
    """
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return list(output)
    raise BALFError(
        f"block {name!r} returned {type(output).__name__}; a block must return a tensor or a "
        "tuple whose first element is the hidden state"
    )


_CACHE_ARGUMENTS = ("cache", "past_key_values", "past_key_value", "layer_past")


def check_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse a key/value cache passed to a block: it would grow with every replayed call and
    make the statistics wrong without any error (transformers' decoders create one when
    ``use_cache=True``; the argument is ``cache`` in transformers 5, ``past_key_values`` before).

    Raises:
        BALFError: naming the fix (``use_cache=False``).
    """
    if any(kwargs.get(k) is not None for k in _CACHE_ARGUMENTS):
        raise BALFError(
            f"block {name!r} receives a key/value cache (past_key_values); calibrate without "
            "one: forward=lambda model, batch: model(**batch, use_cache=False)"
        )


def check_chain(
    model: nn.Module,
    blocks: Mapping[str, nn.Module],
    targets: Mapping[str, nn.Module],
    batch: Any,
    run: Callable[[nn.Module, Any], Any],
) -> ChainInfo:
    """Run ``model`` once on ``batch`` (``run(model, batch)``), check that ``blocks`` form a
    chain (module docstring) and sort ``targets`` by where they are called.

    Raises:
        BALFError: a block is called never or several times, out of order, without a positional
            tensor input, with a key/value cache, or with an input that is not the previous
            block's output.
    """
    names = list(blocks)
    seen: list[list[Any]] = []  # [name, input, output hidden]
    where: dict[str, set[str]] = {t: set() for t in targets}
    state = {"segment": _PREFIX}

    def pre(name):
        def hook(module, args, kwargs):
            if not args or not isinstance(args[0], Tensor):
                raise BALFError(
                    f"block {name!r} is called without a positional tensor input; block-by-block "
                    "calibration carries the first positional argument from block to block"
                )
            check_kwargs(name, kwargs)
            seen.append([name, args[0], None])
            state["segment"] = name

        return hook

    def post(name):
        def hook(module, args, kwargs, output):
            seen[-1][2] = output_elements(output, name)[0]
            state["segment"] = _TAIL if name == names[-1] else _BETWEEN

        return hook

    def layer_hook(name):
        return lambda *_: where[name].add(state["segment"])

    handles = []
    try:
        for name, block in blocks.items():
            handles.append(block.register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(block.register_forward_hook(post(name), with_kwargs=True))
        for name, layer in targets.items():
            handles.append(layer.register_forward_hook(layer_hook(name), prepend=True))
        with eval_mode(model):
            run(model, batch)
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
        if not (x is out or (x.shape == out.shape and bool((x == out).all()))):
            raise BALFError(
                f"the input of block {name!r} is not the output of block {prev!r}: something "
                "runs between them; name blocks that follow each other directly"
            )
    return _sort(targets, names, where)


def _sort(targets: Mapping[str, nn.Module], names: list[str], where: dict) -> ChainInfo:
    only = {t: next(iter(s)) if len(s) == 1 else None for t, s in where.items()}
    prefix = [t for t in targets if only[t] == _PREFIX]
    members = {b: [t for t in targets if only[t] == b] for b in names}
    tail = [t for t in targets if only[t] == _TAIL]
    placed = {*prefix, *tail, *(t for m in members.values() for t in m)}
    return ChainInfo(prefix, members, tail, [t for t in targets if t not in placed])
