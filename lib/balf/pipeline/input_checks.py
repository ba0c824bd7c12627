"""Checks of a compression's inputs that would otherwise end in a raw torch error."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from balf.errors import BALFError

__all__ = ["check_latency_example", "check_model_and_options"]


def check_model_and_options(model: nn.Module, batch_size: Any) -> None:
    """A model with real weights (not on the meta device) and a positive ``batch_size``.

    Raises:
        BALFError: naming the problem and the fix.
    """
    if not isinstance(model, nn.Module):
        raise BALFError(f"model must be an nn.Module, got {type(model).__name__}")
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise BALFError(
            f"the model is on the meta device (no weights; e.g. {meta[0]!r}): load its trained "
            "weights first (model.to_empty(device='cpu') then load_state_dict), or use balf.load "
            "for a saved compressed model"
        )
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size < 1
    ):
        raise BALFError(f"batch_size must be a positive integer, got {batch_size!r}")


def check_latency_example(
    example: Any, kwargs: dict | None, forward: Callable[[nn.Module, Any], Any] | None
) -> None:
    """``metric="latency"`` times the model on one tensor input: refuse other batch structures.

    Raises:
        BALFError: the calibration batches are ``(args, kwargs)`` pairs, dicts or need a
            ``forward`` callable.
    """
    if forward is not None or kwargs or not isinstance(example, Tensor):
        kind = (
            "need a forward callable"
            if forward is not None
            else "are (args, kwargs) pairs"
            if kwargs or isinstance(example, tuple)
            else f"are {type(example).__name__} objects"
        )
        raise BALFError(
            f'metric="latency" times the whole model on one tensor input, but the calibration '
            f"batches {kind}. Measure a table yourself and pass it "
            "(latency=balf.ranks.latency.measure_latency(model, tensor_input, layers)), or use "
            'metric="flops"'
        )
