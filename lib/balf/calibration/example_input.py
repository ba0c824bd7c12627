"""The first calibration sample: the example input of FLOP counts, and each layer's output rows.

Data-free modes have no statistics to read ``rows_per_sample`` from; when calibration data is
given, one forward pass on its first sample measures them, so such modes report FLOPs exactly
as they do after an activation-aware mode collected the statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import Tensor, nn

from balf._device import model_device
from balf.calibration.batches import (
    as_call,
    batch_dim,
    batch_size_of,
    first_call_sample,
    first_samples,
    to_device,
)
from balf.counting.flops import count_flops
from balf.errors import BALFError
from balf.io.fingerprints import PeekedIterable
from balf.layers.dispatch import rows_of_call

__all__ = ["first_example", "measure_rows"]


def first_example(
    data: Iterable | Tensor,
    forward: Callable[[nn.Module, Any], Any] | None,
    model: nn.Module | None = None,
) -> tuple[tuple[Any, dict], Iterable | Tensor]:
    """The first sample of the calibration data, and the data to use afterwards.

    Args:
        data: a tensor of samples ``(N, ...)`` or an iterable of batches (see
            :func:`balf.collect_statistics`).
        forward: the ``forward(model, batch)`` callable for batches of another structure.
        model: the network the data is for: a sequence-first one (``batch_first=False``,
            inputs ``(L, B, ...)``) is cut along its batch dimension (see
            :func:`balf.calibration.batches.batch_dim`); without it, along dim 0.

    Returns:
        ``((example_input, example_kwargs), data)``: the example cut to one sample ``(1, ...)``
        on the CPU; ``data`` is the input, or for a one-shot iterator one that yields the
        batch read again, then the rest.

    Raises:
        BALFError: the data is empty.
    """
    if isinstance(data, Tensor):
        batch = data[:1]
    else:
        it = iter(data)
        batch = next(it, None)
        if it is data and batch is not None:  # a one-shot iterator: give the batch back
            data = PeekedIterable(batch, it, None)
    if batch is None:
        raise BALFError("the calibration data is empty: pass at least one non-empty batch")
    if forward is None:
        batch = as_call(batch)
    dim = 0 if model is None else batch_dim(model, batch, _runner(model, batch, forward))
    n = batch_size_of(batch, dim)
    if forward is not None:
        return (first_samples(batch, n, dim), {}), data
    return first_call_sample(*batch, n, dim), data


def _runner(
    model: nn.Module, batch: Any, forward: Callable[[nn.Module, Any], Any] | None
) -> Callable[[], Any]:
    """Runs ``model`` on ``batch`` (an ``(args, kwargs)`` pair without ``forward``)."""

    def run() -> Any:
        on_device = to_device(batch, model_device(model))
        if forward is not None:
            return forward(model, on_device)
        return model(*on_device[0], **on_device[1])

    return run


def measure_rows(
    model: nn.Module,
    targets: Mapping[str, nn.Module],
    example: Any,
    kwargs: dict,
    forward: Callable[[nn.Module, Any], Any] | None,
) -> dict[str, float]:
    """Output vectors per call of every target layer on one example (``H_out·W_out`` for a
    conv, tokens for a Linear), by forward hooks during a FLOP-counting pass."""
    rows = dict.fromkeys(targets, 0)

    def hook(name):
        return lambda module, _, output: rows.__setitem__(
            name, rows[name] + rows_of_call(module, output)
        )

    handles = [m.register_forward_hook(hook(n), prepend=True) for n, m in targets.items()]
    try:
        count_flops(model, example, kwargs, forward=forward)
    finally:
        for h in handles:
            h.remove()
    return {n: float(r) for n, r in rows.items()}
