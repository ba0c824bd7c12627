"""What a statistics hook adds up: one layer's float64 Gram matrix over every call.

:class:`GramAccumulator` is the forward hook of method §2: on each call it adds the layer's
output Gram ``Y_gᵀY_g`` (``"output"`` side) or input Gram ``X_gᵀX_g`` (``"input"`` side) to a
float64 :class:`balf.LayerStatistics`. Every calibration strategy registers its accumulators
through :func:`balf.calibration.layer_pass.hooked_pass`; an :data:`AccumulatorFactory` makes one
per layer, so a strategy can collect other statistics (e.g. cross products between two models)
with the same hooks, all-reduce and checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn

from balf.calibration.padding import PaddingMask
from balf.calibration.statistics import LayerStatistics
from balf.io.hashing import tensor_digest
from balf.layers.dispatch import dense_weight, geometry_of, input_gram, output_gram, rows_of_call
from balf.layers.geometry import Side

__all__ = ["Accumulator", "AccumulatorFactory", "GramAccumulator", "compute_dtype"]


class Accumulator(Protocol):
    """A forward hook ``(module, inputs, output)`` that adds each call to :attr:`stats`.

    ``stats.gram`` (any float64 tensor), ``stats.rows`` and ``stats.calls`` are summed over the
    processes of ``torch.distributed`` and checked for NaN/Inf by
    :func:`balf.calibration.layer_pass.hooked_pass`.
    """

    stats: LayerStatistics

    def __call__(self, module: nn.Module, inputs: tuple, output: Tensor) -> None: ...


AccumulatorFactory = Callable[[str, nn.Module, Side], Accumulator]
"""``factory(name, module, side)`` makes the accumulator of one layer."""


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Per-batch products run in the layer's dtype, but never below float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class GramAccumulator:
    """Forward hook adding one layer's Gram matrices ``(G, S, S)`` of each call in float64.

    Args:
        name: the layer's module name (for messages).
        module: the layer.
        side: ``"output"`` (``S = K``, from the pre-bias output) or ``"input"`` (``S = D``).
        padding: the padding mask of the running batch (:mod:`balf.calibration.padding`):
            rows of padding tokens are left out. ``None``: every row counts.
    """

    def __init__(
        self, name: str, module: nn.Module, side: Side, padding: PaddingMask | None = None
    ) -> None:
        geo = geometry_of(module)
        size = geo.in_dim if side == "input" else geo.out_dim
        w = dense_weight(module)
        self.name = name
        self.module = module
        self.side = side
        self.padding = padding
        self.stats = LayerStatistics(
            side=side,
            gram=torch.zeros(geo.groups, size, size, dtype=torch.float64, device=w.device),
            weight_digest=tensor_digest(w),
        )

    def __call__(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        st = self.stats
        st.calls += 1
        st.output_shape = tuple(output.shape[1:])
        x = inputs[0] if self.side == "input" else None
        real = self.padding.rows(module, output) if self.padding is not None else None
        if real is not None:  # (B, L) → the rows of real tokens, (N, K) / (N, D)
            output = output[real]
            x = x[real] if x is not None else None
        dtype = compute_dtype(output.dtype)
        if self.side == "output":
            gram = output_gram(module, output, dtype)
        else:
            gram = input_gram(module, x, dtype)
        st.gram += gram.to(torch.float64)
        st.rows += rows_of_call(module, output)
