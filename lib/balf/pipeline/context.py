"""What one :class:`balf.Compressor` knows and measures once: :class:`CompressionContext`.

The context is what calibration strategies (:mod:`balf.pipeline.strategy`), budget metrics
(:meth:`balf.ranks.costs.BudgetMetric.prepare`) and allocation objectives receive instead of the
whole compressor: the model and the chosen layers, the calibration data and how to run the model
on it, and the things measured once and reused by every compression at every setting — the
whole-model statistics and decompositions, each layer's rows per sample, the uncompressed
model's counts and layer shapes, the latency table.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from balf._device import model_device
from balf.calibration.batches import as_call, batch_size_of, split_batches, to_device
from balf.calibration.example_input import first_example, measure_rows
from balf.calibration.statistics import Statistics, check_statistics
from balf.calibration.uncalled import uncalled_reasons
from balf.counting.flops import count_flops
from balf.decomposition import LayerDecomposition
from balf.errors import BALFError
from balf.io.cache import Cache
from balf.layers.attention import temporarily_unpacked
from balf.layers.geometry import Side
from balf.layers.selection import LayerSelection
from balf.pipeline.baseline import BaselineCounts
from balf.pipeline.cached import load_or_collect_statistics, load_or_decompose
from balf.pipeline.input_checks import check_latency_example
from balf.pipeline.objective_measurements import ObjectiveMeasurements
from balf.pipeline.shape_check import LayerShapeError, value_errors
from balf.ranks.latency.source import LatencySource
from balf.ranks.latency.table import LatencyTable

__all__ = ["CompressionContext", "DataOptions"]


Forward = Callable[[nn.Module, Any], Any]


@dataclass
class DataOptions:
    """The calibration data and how it is read.

    Attributes:
        data: an iterable of batches, a tensor of samples ``(N, ...)``, or ``None``
            (data-free, or precomputed statistics); see :func:`balf.collect_statistics`.
        forward: ``forward(model, batch)`` for batches of another structure (``None``: the
            batch is the input, an ``(args, kwargs)`` pair or a mapping of keyword inputs).
        batch_size: batch size when ``data`` is a tensor of samples.
        max_batches: use at most this many batches (``None``: all).
        side: ``"input"``/``"output"`` statistics for every layer (``None``: the cheaper side).
        progress: show tqdm bars.
    """

    data: Iterable | Tensor | None = None
    forward: Forward | None = None
    batch_size: int = 64
    max_batches: int | None = None
    side: Side | None = None
    progress: bool = True


class CompressionContext(ObjectiveMeasurements):
    """The model, its chosen layers, the calibration data and what is measured once on them.

    Args:
        model: the uncompressed network.
        selection: the layers to factorize (``targets``, ``aliases``, ``skipped``).
        data: the calibration data and its options.
        statistics: precomputed whole-model statistics (then ``data.data`` is ``None``).
        cache: optional disk cache of statistics and decompositions.
        latency: a measured :class:`LatencyTable`, or the options to measure one.

    Attributes:
        timings: seconds per phase of the current compression (reset by each one).
    """

    def __init__(
        self,
        model: nn.Module,
        selection: LayerSelection,
        data: DataOptions,
        *,
        statistics: Statistics | None = None,
        cache: Cache | None = None,
        latency: LatencyTable | dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.selection = selection
        self.data = data
        self.cache = cache
        self.latency = LatencySource(latency)
        self.baseline = BaselineCounts(model, data.forward)
        self.timings: dict[str, float] = {}
        self._statistics: Statistics | None = None
        self._decompositions: dict[bool, dict[str, LayerDecomposition]] = {}
        self._rows: dict[str, float] | None = None
        ObjectiveMeasurements.__init__(self)
        self._value_errors: dict[str, str] | None = None
        if statistics is not None:
            self._check_statistics(statistics)
            self._statistics = statistics

    # -- the layers ----------------------------------------------------------------------------

    @property
    def targets(self) -> dict[str, nn.Module]:
        """The layers to factorize by (first) name, in model order."""
        return self.selection.targets

    @property
    def aliases(self) -> dict[str, list[str]]:
        """Every name each target is registered under."""
        return self.selection.aliases

    @property
    def skipped(self) -> dict[str, str]:
        """The layers left dense, with the reason."""
        return self.selection.skipped

    def skip(self, reasons: dict[str, str]) -> None:
        """Leave the layers ``reasons`` names dense (see :meth:`LayerSelection.skip`)."""
        self.selection.skip(reasons)

    # -- the calibration data ------------------------------------------------------------------

    @property
    def device(self):
        """The model's device (of its first parameter)."""
        return model_device(self.model)

    @property
    def has_data(self) -> bool:
        """Whether activation-aware modes can run (calibration data or statistics)."""
        return self._statistics is not None or self.data.data is not None

    def calibration_batches(self) -> Iterator[Any]:
        """Every calibration batch (at most ``max_batches``, empty ones left out), its tensors
        moved to the model's device, as :meth:`run` takes them.

        Raises:
            BALFError: there is no calibration data (only statistics, or none).
        """
        if self.data.data is None:
            raise BALFError(
                "no calibration data to iterate (this compressor was given Statistics or no "
                "data): pass the calibration batches instead"
            )
        device = self.device
        for batch in split_batches(self.data.data, self.data.batch_size, self.data.max_batches):
            if self.batch_size_of(batch):
                yield to_device(batch, device)

    def batch_size_of(self, batch: Any) -> int:
        """Samples in a batch (0: an empty batch, which calibration skips)."""
        if self.data.forward is None:
            return batch_size_of(as_call(batch))
        return batch_size_of(batch)

    def run(self, model: nn.Module, batch: Any) -> Any:
        """Call ``model`` on one batch as calibration does: ``forward(model, batch)``,
        ``model(*args, **kwargs)`` for an ``(args, kwargs)`` pair or a mapping, else
        ``model(input)``; returns the model's output. Runs in the caller's grad mode and the
        model's own train/eval mode."""
        if self.data.forward is not None:
            return self.data.forward(model, batch)
        args, kwargs = as_call(batch)
        return model(*args, **kwargs)

    # -- whole-model statistics and decompositions ---------------------------------------------

    @property
    def has_statistics(self) -> bool:
        """Whether the whole-model statistics are already collected (or given)."""
        return self._statistics is not None

    @property
    def statistics(self) -> Statistics:
        """Whole-model calibration statistics, collected (or loaded from the cache) on first use.

        Raises:
            BALFError: there is no calibration data.
        """
        if self._statistics is None:
            if self.data.data is None:
                raise BALFError(
                    "this config is activation-aware and needs calibration data: pass data or "
                    "Statistics, or use a data-free config (activation_aware=False)"
                )
            d = self.data
            with self.timed("statistics"):
                self._statistics = load_or_collect_statistics(
                    self.cache, self.model, self.targets, d.data, check=self._check_statistics,
                    side=d.side, batch_size=d.batch_size, progress=d.progress,
                    forward=d.forward, max_batches=d.max_batches,
                )  # fmt: skip
                self._skip_uncalled(self._statistics)
        return self._statistics

    def decompositions(self, activation_aware: bool) -> dict[str, LayerDecomposition]:
        """Per-layer decompositions of the whole model, computed once: activation-aware (from
        :attr:`statistics`) or plain SVD of the weights. Under a block-by-block strategy the
        activation-aware ones need the whole-model statistics (collected on first use)."""
        if activation_aware not in self._decompositions:
            stats = self.statistics if activation_aware else None
            with self.timed("decomposition"):
                self._decompositions[activation_aware] = load_or_decompose(
                    self.cache, self.targets, stats, device=self.device,
                    progress=self.data.progress,
                )  # fmt: skip
        return self._decompositions[activation_aware]

    def _check_statistics(self, stats: Statistics) -> None:
        self._skip_uncalled(stats)
        check_statistics(stats, self.targets)

    def _skip_uncalled(self, stats: Statistics) -> None:
        """Skip the layers the statistics list as never called (``extra["skipped"]``)."""
        skipped = stats.extra.get("skipped", {})
        never_called = [n for n in self.targets if n not in stats.layers and n in skipped]
        self.skip({n: skipped[n] for n in never_called})

    # -- one example: rows per sample, counts, shapes ------------------------------------------

    def example_call(self) -> tuple[Any, dict] | None:
        """``(example_input, example_kwargs)``: the first calibration sample ``(1, ...)`` on the
        CPU (the statistics' when collected, else read from the data); ``None`` without data."""
        d = self.data
        if self._statistics is None and d.data is not None and self.baseline.example is None:
            self.baseline.example, d.data = first_example(d.data, d.forward, self.model)
        return self.baseline.example_call(self._statistics)

    def rows_per_sample(self) -> dict[str, float] | None:
        """Output vectors per sample of every chosen layer (the FLOP model), when known.

        From the whole-model statistics when they are collected; otherwise, when there is data,
        from one forward pass on its first sample (layers it never calls are skipped with the
        reason), so data-free modes report FLOPs as activation-aware ones do.
        """
        if self._statistics is not None:
            return {n: self._statistics.rows_per_sample(n) for n in self.targets}
        if self.data.data is None:
            return None
        if self._rows is None:
            example = self.example_call()
            with temporarily_unpacked(self.model):
                self._rows = measure_rows(self.model, self.targets, *example, self.data.forward)
                uncalled = {n: self.targets[n] for n, r in self._rows.items() if r == 0}
                if uncalled:  # the forward pass that finds the layers used through their weight
                    run = functools.partial(
                        count_flops, self.model, *example, forward=self.data.forward
                    )
                    self.skip(uncalled_reasons(uncalled, run))
        return {n: self._rows[n] for n in self.targets}

    def rerun_example(self, model: nn.Module) -> Callable[[], Any] | None:
        """One forward pass of ``model`` on the example call, in eval mode without grad
        (``None`` without data); tells why a layer was never called."""
        call = self.example_call()
        if call is None:
            return None
        return functools.partial(count_flops, model, *call, forward=self.data.forward)

    def baseline_counts(self) -> tuple[int, int | None]:
        """Parameters and FLOPs of the uncompressed model (FLOPs need an example input)."""
        self.example_call()
        return self.baseline.counts(self.targets, self._statistics)

    def count_flops(self, model: nn.Module) -> int:
        """FLOPs of ``model`` (e.g. the compressed one) on the example call."""
        return self.baseline.flops_of(model, self._statistics)

    def layer_shapes(self) -> dict:
        """``{name: (input shape, output shape)}`` of every chosen layer on the example call
        (empty without data), measured with the baseline FLOP count."""
        self.baseline_counts()
        return self.baseline.shapes

    def check_layer_values(self, names: Iterable[str]) -> None:
        """Check that the low-rank modules of layers ``names`` compute what the layers compute
        (:func:`balf.pipeline.shape_check.value_errors`, one forward pass on the example call,
        once per compressor; nothing to check without data).

        Raises:
            LayerShapeError: naming the first such layer and the fix.
        """
        if self._value_errors is None:
            call = self.example_call()
            self._value_errors = {}
            if call is not None:
                with temporarily_unpacked(self.model):
                    self._value_errors = value_errors(
                        self.model, self.targets, *call, self.data.forward
                    )
        for name in names:
            if name in self._value_errors:
                raise LayerShapeError(self._value_errors[name])

    # -- latency -------------------------------------------------------------------------------

    def latency_table(self, rank_multiple: int = 1) -> LatencyTable:
        """The measured latencies of the chosen layers (measured on first use, then kept).

        Args:
            rank_multiple: measure ranks that are multiples of this (unless the ``latency``
                options of the compressor say otherwise).
        """
        start = time.perf_counter()
        defaults = {"progress": self.data.progress, "rank_multiple": rank_multiple}
        table, measured = self.latency.table_for(
            self.model, self.targets, self._latency_example, defaults
        )
        if measured:
            self.timings["latency"] = time.perf_counter() - start
        return table

    def _latency_example(self) -> Tensor:
        call = self.example_call()
        if call is None:
            raise BALFError(
                'metric="latency" measures the model on a calibration sample: pass calibration '
                "data, or a measured table (latency=balf.ranks.latency.measure_latency(...))"
            )
        check_latency_example(*call, self.data.forward)
        return call[0]

    # -- timings -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the seconds the block takes to ``timings[phase]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - start
