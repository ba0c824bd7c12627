"""The entry points: :func:`compress` for one call, :class:`Compressor` to reuse work across many.

A compression runs four phases: calibration statistics (one forward pass), per-layer
decompositions (once per layer, reused for every rank), rank selection by the config's rule, and
replacement of each layer by its low-rank version where that is strictly cheaper.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from torch import Tensor, nn

from balf._device import model_device
from balf.calibration.block_by_block import BlockByBlock
from balf.calibration.coverage import under_calibrated, warn_under_calibrated
from balf.calibration.example_input import first_example, measure_rows
from balf.calibration.input_checks import check_latency_example, check_model_and_options
from balf.calibration.statistics import Statistics, check_statistics
from balf.calibration.uncalled import uncalled_reasons
from balf.counting.baseline import BaselineCounts
from balf.counting.flops import count_flops, count_params
from balf.decomposition import LayerDecomposition
from balf.errors import BALFError
from balf.io.cache import Cache, load_or_collect_statistics, load_or_decompose
from balf.layers.attention import prepare_replacement, temporarily_unpacked
from balf.layers.dispatch import geometry_of
from balf.layers.geometry import Side
from balf.layers.install import install_factorized
from balf.layers.selection import LayerSelection
from balf.ranks.configs import CompressionConfig
from balf.ranks.costs import LayerCandidate, LayerCost
from balf.ranks.latency.source import LatencySource
from balf.ranks.latency.table import LatencyTable
from balf.ranks.objectives import SensitivityObjective
from balf.report import Report
from balf.report.build import fill_totals, layer_report
from balf.sensitivity import load_or_measure_sensitivities, measure_sensitivities
from balf.sequential import LayerSequential, refit_in_order

__all__ = ["Compressor", "compress"]

log = logging.getLogger(__name__)


class Compressor:
    """Compress one model at many settings, computing statistics and decompositions once.

    Args:
        model: the trained network (not modified unless ``compress(..., inplace=True)``).
        data_or_statistics: calibration batches (see :func:`balf.collect_statistics`), a
            :class:`Statistics` collected on this model, or ``None`` for data-free modes.
        layers: module names, glob patterns (``"blocks.*.attn.qkv"``) or name suffixes
            (``"q_proj"``, as peft's ``target_modules``) to compress (default: every supported
            layer, including the projections of ``nn.MultiheadAttention``, named
            ``<attention>.in_proj`` and ``<attention>.out_proj``). Layers whose weight is
            shared with another module (tied weights), and layers the forward pass never
            calls (unused, or used only through their weight) are kept dense and listed in
            ``Report.skipped`` with the reason; a module registered under several names is
            factorized once and stays shared.
        cache: optional :class:`Cache` for statistics and decompositions.
        side: force ``"input"``/``"output"`` statistics (default: the cheaper side per layer).
        batch_size: batch size when the data is a tensor of samples.
        progress: show tqdm bars (``False`` for quiet runs, e.g. in scripts and tests).
        forward: ``forward(model, batch)`` for batches of another structure (see
            :func:`balf.collect_statistics`).
        max_batches: use at most this many calibration batches (needed for an endless iterable).
        latency: for ``metric="latency"`` configs, a measured
            :class:`balf.ranks.latency.LatencyTable`
            of these layers, or the keyword arguments of :func:`balf.ranks.latency.measure_latency`
            (``batch_size``, ``cache_dir``, ...) to measure one on first use (default: batch 1,
            no disk cache).
        exclude: names, glob patterns or suffixes of layers to keep dense (e.g.
            ``["lm_head"]``); listed in ``Report.skipped``.
        strategy: how activation-aware configs calibrate: ``None`` for whole-model
            calibration (one pass, every layer's statistics at once), or
            :class:`balf.BlockByBlock` (one block at a time on inputs from the blocks already
            compressed; same ranks, less memory; no ``cache``).

    Example:
        >>> compressor = balf.Compressor(model, calib_loader)
        >>> for ratio in (0.3, 0.5, 0.7):
        ...     small, report = compressor.compress(balf.BALFConfig(ratio))
    """

    def __init__(
        self,
        model: nn.Module,
        data_or_statistics: Iterable | Tensor | Statistics | None = None,
        layers: Iterable[str] | None = None,
        *,
        cache: Cache | None = None,
        side: Side | None = None,
        batch_size: int = 64,
        progress: bool = True,
        forward: Callable[[nn.Module, Any], Any] | None = None,
        max_batches: int | None = None,
        latency: LatencyTable | dict[str, Any] | None = None,
        exclude: Iterable[str] | None = None,
        strategy: BlockByBlock | LayerSequential | None = None,
    ) -> None:
        check_model_and_options(model, batch_size)
        if strategy is not None and not isinstance(strategy, (BlockByBlock, LayerSequential)):
            raise BALFError(
                "strategy must be None, balf.BlockByBlock(...) or balf.LayerSequential(...), "
                f"got {strategy!r}"
            )
        data = data_or_statistics
        one_shot = not isinstance(data, (Tensor, Statistics)) and data is not None
        if isinstance(strategy, LayerSequential) and one_shot and iter(data) is data:
            raise BALFError(
                "layer-sequential refit reads the calibration data once per layer: pass a "
                "re-iterable (a tensor, a list or a DataLoader), not a one-shot iterator"
            )
        if isinstance(strategy, BlockByBlock) and cache is not None:
            raise BALFError(
                "block-by-block calibration does not use a Cache (its statistics depend on the "
                "ranks); pass cache=None"
            )
        self.strategy = strategy
        self._runner = None
        self.model = model
        self.latency = latency
        self.selection = LayerSelection.of(model, layers, exclude)
        # the selection's dicts, shared: skipping a layer updates them
        self.targets, self.aliases = self.selection.targets, self.selection.aliases
        self.skipped = self.selection.skipped
        self.cache = cache
        self.side = side
        self.batch_size = batch_size
        self.progress = progress
        self.forward = forward
        self.max_batches = max_batches
        self._baseline = BaselineCounts(model, forward)
        self._consumed = False
        self._data = None
        self._statistics: Statistics | None = None
        if isinstance(data_or_statistics, Statistics):
            self._statistics = data_or_statistics
            self._check_statistics(data_or_statistics)
        else:
            self._data = data_or_statistics
        self._decompositions: dict[bool, dict[str, LayerDecomposition]] = {}
        self._timings: dict[str, float] = {}
        self._rows: dict[str, float] | None = None
        self._warned_rows = False
        self._sensitivities: dict[tuple, dict[str, float]] = {}

    # -- phases ------------------------------------------------------------------------------

    @property
    def has_data(self) -> bool:
        """Whether activation-aware modes can run (data or statistics were given)."""
        return self._statistics is not None or self._data is not None

    @property
    def statistics(self) -> Statistics:
        """Calibration statistics, collected (or loaded from the cache) on first use."""
        if self._statistics is None:
            if self._data is None:
                raise BALFError(
                    "this config is activation-aware and needs calibration data: pass data or "
                    "Statistics, or use a data-free config (activation_aware=False)"
                )
            start = time.perf_counter()
            self._statistics = load_or_collect_statistics(
                self.cache, self.model, self.targets, self._data, check=self._check_statistics,
                side=self.side, batch_size=self.batch_size, progress=self.progress,
                forward=self.forward, max_batches=self.max_batches,
            )  # fmt: skip
            self._skip_uncalled(self._statistics)
            self._timings["statistics"] = time.perf_counter() - start
        return self._statistics

    def decompositions(self, activation_aware: bool) -> dict[str, LayerDecomposition]:
        """Per-layer decompositions (activation-aware or plain SVD), computed once."""
        if activation_aware not in self._decompositions:
            stats = self.statistics if activation_aware else None
            start = time.perf_counter()
            device = model_device(self.model)
            self._decompositions[activation_aware] = load_or_decompose(
                self.cache, self.targets, stats, device=device, progress=self.progress
            )
            self._timings["decomposition"] = time.perf_counter() - start
        return self._decompositions[activation_aware]

    def candidates(self, activation_aware: bool) -> list[LayerCandidate]:
        """What the rank rules see: cost model and energy curve of every chosen layer."""
        if isinstance(self.strategy, BlockByBlock) and activation_aware:
            return self._block_runner().candidates()
        decompositions = self.decompositions(activation_aware)
        rows_per_sample = self._rows_per_sample()
        out = []
        for name, module in self.targets.items():
            rows = rows_per_sample[name] if rows_per_sample is not None else None
            energies = decompositions[name].energies().cpu().numpy()
            out.append(LayerCandidate(name, LayerCost(geometry_of(module), rows), energies))
        return out

    def compress(
        self, config: CompressionConfig, inplace: bool = False
    ) -> tuple[nn.Module, Report]:
        """Factorize the chosen layers with ``config``'s rank rule.

        Returns:
            ``(model, report)``: a compressed copy (the input model itself if ``inplace``).
        """
        if not isinstance(config, CompressionConfig):
            raise BALFError(f"config must be a balf config (e.g. BALFConfig), got {config!r}")
        if self._consumed:
            raise BALFError("this Compressor's model was compressed in place; make a new one")
        if isinstance(self.strategy, BlockByBlock) and config.activation_aware:
            if getattr(config, "metric", None) == "latency":
                raise BALFError('block-by-block calibration does not support metric="latency"')
            return self._block_runner().compress(config, inplace)
        self._timings = {}
        candidates = self.candidates(config.activation_aware)
        candidates = config.prepare(candidates, self)
        start = time.perf_counter()
        baseline = self._baseline_counts()
        self._timings["measurement"] = time.perf_counter() - start
        start = time.perf_counter()
        ranks, allocation = config.select_ranks(candidates)
        self._timings["allocation"] = time.perf_counter() - start

        replaced = {c.name for c, r in zip(candidates, ranks, strict=True) if c.cost.is_cheaper(r)}
        out = self._copy_model(replaced, inplace)
        out, report = self._replace_layers(out, candidates, ranks, replaced, config)
        has_flops = self._rows_per_sample() is not None
        fill_totals(report, candidates, ranks, allocation, config, has_flops)
        start = time.perf_counter()
        report.model_params_before, report.model_flops_before = baseline
        report.model_params_after = count_params(out)
        if report.model_flops_before is not None:
            report.model_flops_after = self._count_flops(out)
        self._timings["measurement"] += time.perf_counter() - start
        report.timings = dict(self._timings)
        if config.activation_aware:
            report.under_calibrated = under_calibrated(self.statistics, candidates)
            if not self._warned_rows:  # once per Compressor
                warn_under_calibrated(report.under_calibrated, self.statistics.num_samples)
                self._warned_rows = True
        log.info(report.summary())
        return out, report

    def layer_sensitivities(
        self, candidates: list[LayerCandidate], objective: SensitivityObjective
    ) -> dict[str, float]:
        """Measured sensitivity weights of ``candidates`` (:mod:`balf.sensitivity`), from the
        cache when it holds them; the time is reported as ``timings["sensitivity"]``."""
        if self._data is None:
            raise BALFError(
                "the sensitivity objective measures the model's output on calibration samples: "
                "pass calibration data (not only Statistics), or give the weights"
            )
        memo = (objective.probe_keep, objective.probe_samples, objective.divergence,
                tuple(c.name for c in candidates))  # fmt: skip
        if memo in self._sensitivities:
            return self._sensitivities[memo]
        start = time.perf_counter()
        decompositions = self.decompositions(True)

        def measure(data):
            return measure_sensitivities(
                self.model, candidates, self.targets, self.aliases, decompositions, data,
                objective, forward=self.forward, batch_size=self.batch_size,
                max_batches=self.max_batches, progress=self.progress,
            )  # fmt: skip

        weights, self._data = load_or_measure_sensitivities(
            self.cache, self.model, candidates, self.statistics, self._data, objective, measure,
            batch_size=self.batch_size, max_batches=self.max_batches, forward=self.forward,
        )  # fmt: skip
        self._timings["sensitivity"] = time.perf_counter() - start
        self._sensitivities[memo] = weights
        return weights

    @property
    def latency(self) -> LatencyTable | dict[str, Any] | None:
        """The latency table (once given or measured), else the options to measure one."""
        return self._latency.table or self._latency.options

    @latency.setter
    def latency(self, value: LatencyTable | dict[str, Any] | None) -> None:
        self._latency = LatencySource(value)

    def latency_table(self, rank_multiple: int = 1) -> LatencyTable:
        """The measured latencies of the chosen layers (measured on first use, then kept).

        Args:
            rank_multiple: measure ranks that are multiples of this (unless the ``latency``
                options of the constructor say otherwise).
        """
        start = time.perf_counter()
        defaults = {"progress": self.progress, "rank_multiple": rank_multiple}
        table, measured = self._latency.table_for(
            self.model, self.targets, self._latency_example, defaults
        )
        if measured:
            self._timings["latency"] = time.perf_counter() - start
        return table

    def _latency_example(self) -> Tensor:
        stats = self.statistics
        check_latency_example(stats.example_input, stats.example_kwargs, self.forward)
        return stats.example_input

    def _copy_model(self, replaced: set[str], inplace: bool) -> nn.Module:
        """The model to install the factorized layers in: a copy, or the model if ``inplace``."""
        start = time.perf_counter()
        if inplace:
            out, self._consumed = self.model, True
        else:
            # copy everything but the layers about to be replaced (they would be thrown away);
            # every name of an aliased layer is replaced, so no original module is left in `out`
            memo = {id(self.targets[name]): self.targets[name] for name in replaced}
            out = copy.deepcopy(self.model, memo)
        # attention modules with a projection to replace are unpacked for good (layers.attention)
        prepare_replacement(out, [a for n in replaced for a in self.aliases[n]])
        self._timings["copy"] = time.perf_counter() - start
        return out

    def _replace_layers(
        self,
        out: nn.Module,
        candidates: list[LayerCandidate],
        ranks: list[int],
        replaced: set[str],
        config: CompressionConfig,
    ) -> tuple[nn.Module, Report]:
        """Install the factorized layers in ``out`` and report every layer's outcome."""
        start = time.perf_counter()
        report = Report(config=config.to_dict(), mode=config.mode, skipped=dict(self.skipped))
        decompositions = dict(self.decompositions(config.activation_aware))
        aa_energies = self._activation_energies(config.activation_aware)
        shapes = self._layer_shapes() if replaced else {}
        plan = {c.name: r for c, r in zip(candidates, ranks, strict=True) if c.name in replaced}

        def install(name: str, dec: LayerDecomposition, rank: int) -> nn.Module:
            nonlocal out
            dense, aliases = self.targets[name], self.aliases[name]
            out = install_factorized(out, name, dense, dec, rank, aliases, shapes.get(name))
            decompositions[name] = dec
            return out.get_submodule(name) if name else out

        notes: dict[str, str | None] = {}
        if isinstance(self.strategy, LayerSequential) and config.activation_aware:
            outcome = refit_in_order(
                self.model, out, plan, decompositions, self._data, self.strategy.refit, install,
                samples=self.strategy.samples, forward=self.forward, batch_size=self.batch_size,
                max_batches=self.max_batches, progress=self.progress,
            )  # fmt: skip
            report.strategy = {**self.strategy.to_dict(), "layers": outcome}
            notes = {n: o["note"] for n, o in outcome.items()}
        else:
            for name, rank in plan.items():
                install(name, decompositions[name], rank)
        for cand, rank in zip(candidates, ranks, strict=True):
            entry = layer_report(
                cand, rank, cand.name in replaced, decompositions[cand.name], aa_energies, config
            )
            entry.note = notes.get(cand.name) or entry.note
            report.layers[cand.name] = entry
        self._timings["replacement"] = time.perf_counter() - start
        return out, report

    # -- helpers -----------------------------------------------------------------------------

    def _block_runner(self):
        """The ``BlockRunner`` (:mod:`balf.calibration.block_by_block`) of ``strategy``, made
        on first use."""
        if self._runner is None:
            self._runner = self.strategy.runner(self)
        return self._runner

    def _baseline_counts(self) -> tuple[int, int | None]:
        """Parameters and FLOPs of the uncompressed model (FLOPs need an example input)."""
        self._rows_per_sample()  # finds an example input when there is data
        return self._baseline.counts(self.targets, self._statistics)

    def _count_flops(self, model: nn.Module) -> int:
        return self._baseline.flops_of(model, self._statistics)

    def _rows_per_sample(self) -> dict[str, float] | None:
        """Output vectors per sample of every chosen layer (the FLOP model), when known.

        From the statistics when they are loaded; otherwise, when there is data, from one
        forward pass on its first sample, so that data-free modes report FLOPs exactly as
        they do after an activation-aware mode collected the statistics.
        """
        if self._statistics is not None:
            return {n: self._statistics.rows_per_sample(n) for n in self.targets}
        if self._data is None:
            return None
        if self._rows is None:
            example, self._data = first_example(self._data, self.forward)
            self._baseline.example = example
            with temporarily_unpacked(self.model):
                self._rows = measure_rows(self.model, self.targets, *example, self.forward)
                uncalled = {n: self.targets[n] for n, r in self._rows.items() if r == 0}
                if uncalled:  # the forward pass that finds the layers used through their weight
                    run = functools.partial(count_flops, self.model, *example, forward=self.forward)
                    self.selection.skip(uncalled_reasons(uncalled, run))
        return {n: self._rows[n] for n in self.targets}

    def _layer_shapes(self) -> dict:
        """Input and output shapes of every chosen layer on the first calibration sample
        (empty without data), measured by the baseline FLOP count."""
        self._baseline_counts()
        return self._baseline.shapes

    def _activation_energies(self, activation_aware: bool) -> dict[str, np.ndarray] | None:
        if activation_aware:
            decs = self._decompositions[True]
            return {n: d.energies().cpu().numpy() for n, d in decs.items()}
        return None

    def _check_statistics(self, stats: Statistics) -> None:
        self._skip_uncalled(stats)
        check_statistics(stats, self.targets)

    def _skip_uncalled(self, stats: Statistics) -> None:
        """Skip the layers the statistics list as never called (``extra["skipped"]``)."""
        skipped = stats.extra.get("skipped", {})
        never_called = [n for n in self.targets if n not in stats.layers and n in skipped]
        self.selection.skip({n: skipped[n] for n in never_called})


def compress(
    model: nn.Module,
    data_or_statistics: Iterable | Tensor | Statistics | None,
    config: CompressionConfig,
    layers: Iterable[str] | None = None,
    inplace: bool = False,
    **kwargs: Any,
) -> tuple[nn.Module, Report]:
    """Compress ``model`` once; see :class:`Compressor` for the arguments.

    Returns:
        ``(compressed model, report)``. The input model is unchanged unless ``inplace=True``.

    Example:
        >>> small, report = balf.compress(model, calib_loader, balf.BALFConfig(0.5))
        >>> report.model_flops_ratio
        0.49...
    """
    compressor = Compressor(model, data_or_statistics, layers, **kwargs)
    return compressor.compress(config, inplace=inplace)
