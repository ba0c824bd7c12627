"""What a statistics hook adds up: one layer's float64 Gram matrix over every call.

:class:`GramAccumulator` is the forward hook of method §2: on each call it adds the layer's
output Gram ``Y_gᵀY_g`` (``"output"`` side) or input Gram ``X_gᵀX_g`` (``"input"`` side) to a
float64 :class:`balf.LayerStatistics`. Every calibration strategy registers its accumulators
through :func:`balf.calibration.layer_pass.hooked_pass`; an :data:`AccumulatorFactory` makes one
per layer, so a strategy can collect other statistics (e.g. cross products between two models)
with the same hooks, all-reduce and checks.

Layers that read the same tensor (a block's gate and up projections, convolutions on one feature
map) compute its input Gram once per call: the accumulators of one pass share a
:class:`SharedInputGram`, which keeps the last input Gram with the identity of the tensor it came
from and the input geometry it was computed for.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn

from balf.calibration.padding import PaddingMask
from balf.calibration.statistics import LayerStatistics
from balf.io.hashing import tensor_digest
from balf.layers.dispatch import dense_weight, geometry_of, input_gram, output_gram, rows_of_call
from balf.layers.geometry import Side

__all__ = [
    "Accumulator",
    "AccumulatorFactory",
    "GramAccumulator",
    "SharedInputGram",
    "compute_dtype",
]


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


def _input_signature(module: nn.Module) -> tuple:
    """What a layer's input Gram depends on besides the input: its kind and input geometry
    (``D``, groups and, for convolutions, the patch extraction)."""
    geo = geometry_of(module)
    patches = tuple(
        repr(getattr(module, a, None))
        for a in ("kernel_size", "stride", "padding", "dilation", "padding_mode")
    )
    return (type(module), geo.in_dim, geo.groups, patches)


class SharedInputGram:
    """The last input Gram computed in a pass, reused by layers that read the same tensor.

    A Gram is reused only for the very same tensor object (held by a weak reference, unchanged
    since: same version counter, storage and layout) and the same input geometry and dtype.
    """

    def __init__(self) -> None:
        self._source: weakref.ref | None = None
        self._key: tuple | None = None
        self._gram: Tensor | None = None
        self.hits = 0

    def gram(self, module: nn.Module, x: Tensor, dtype: torch.dtype) -> Tensor:
        """``input_gram(module, x, dtype)``, computed once for consecutive readers of ``x``."""
        key = (
            x._version,
            x.data_ptr(),
            tuple(x.shape),
            x.stride(),
            dtype,
            _input_signature(module),
        )
        if self._source is not None and self._source() is x and self._key == key:
            self.hits += 1
            return self._gram
        gram = input_gram(module, x, dtype)
        self._source, self._key, self._gram = weakref.ref(x), key, gram
        return gram


class GramAccumulator:
    """Forward hook adding one layer's Gram matrices ``(G, S, S)`` of each call in float64.

    Args:
        name: the layer's module name (for messages).
        module: the layer.
        side: ``"output"`` (``S = K``, from the pre-bias output) or ``"input"`` (``S = D``).
        shared: the pass's :class:`SharedInputGram` (input side; ``None``: not shared). Batches
            with padding rows left out are not shared (the kept rows are a new tensor).
        padding: the padding mask of the running batch (:mod:`balf.calibration.padding`):
            rows of padding tokens are left out. ``None``: every row counts.
    """

    def __init__(
        self,
        name: str,
        module: nn.Module,
        side: Side,
        shared: SharedInputGram | None = None,
        padding: PaddingMask | None = None,
    ) -> None:
        geo = geometry_of(module)
        size = geo.in_dim if side == "input" else geo.out_dim
        w = dense_weight(module)
        self.name = name
        self.module = module
        self.side = side
        self.shared = shared
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
        elif self.shared is not None and real is None:
            gram = self.shared.gram(module, x, dtype)
        else:
            gram = input_gram(module, x, dtype)
        st.gram += gram.to(torch.float64)
        st.rows += rows_of_call(module, output)
