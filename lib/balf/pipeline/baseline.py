"""What a :class:`balf.Compressor` measures once on the uncompressed model.

Its parameter count, its FLOPs (which need an example call: the statistics' example input, or the
first sample of the calibration data) and, from the same pass, each chosen layer's input and
output shapes on that sample (the replacement of a layer must produce the same output shape).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from balf.calibration.statistics import Statistics
from balf.counting.flops import count_flops, count_params
from balf.pipeline.shape_check import layer_shapes

__all__ = ["BaselineCounts"]


class BaselineCounts:
    """The uncompressed ``model``'s counts and layer shapes, measured on first use.

    Attributes:
        example: ``(input, kwargs)`` of the data's first sample, set by the compressor when the
            statistics are not (yet) collected; ``None`` without data.
        shapes: input and output shapes of each chosen layer (empty until FLOPs are counted).
    """

    def __init__(self, model: nn.Module, forward: Callable[[nn.Module, Any], Any] | None):
        self.model = model
        self.forward = forward
        self.example: tuple[Any, dict] | None = None
        self.shapes: dict = {}
        self._counts: tuple[int, int | None] | None = None
        self._with_flops: bool | None = None

    def example_call(self, statistics: Statistics | None) -> tuple[Any, dict] | None:
        """``(example_input, example_kwargs)`` for FLOP counts: the statistics', else the data's."""
        if statistics is not None and statistics.example_input is not None:
            return statistics.example_input, statistics.example_kwargs
        return self.example

    def counts(
        self, targets: Mapping[str, nn.Module], statistics: Statistics | None
    ) -> tuple[int, int | None]:
        """``(parameters, FLOPs)`` of the uncompressed model; FLOPs ``None`` without an example.

        Measured again only once an example call becomes available.
        """
        call = self.example_call(statistics)
        if self._counts is None or self._with_flops != (call is not None):
            flops = None
            if call is not None:  # the same pass records each layer's shapes for the check
                self.shapes, flops = layer_shapes(self.model, targets, *call, self.forward)
            self._counts = (count_params(self.model), flops)
            self._with_flops = call is not None
        return self._counts

    def flops_of(self, model: nn.Module, statistics: Statistics | None) -> int:
        """FLOPs of ``model`` (e.g. the compressed one) on the same example call."""
        example, kwargs = self.example_call(statistics)
        return count_flops(model, example, kwargs, forward=self.forward)
