"""The entry points: :func:`compress` for one call, :class:`Compressor` to reuse work across many.

A compression runs four phases: calibration statistics (one forward pass), per-layer
decompositions (once per layer, reused for every rank), rank selection by the config's rule, and
replacement of each layer by its low-rank version where that is strictly cheaper.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Generator, Iterable
from typing import Any

from torch import Tensor, nn

from balf.calibration.coverage import under_calibrated, warn_under_calibrated
from balf.calibration.statistics import Statistics
from balf.counting.flops import count_params
from balf.errors import BALFError
from balf.io.cache import Cache
from balf.layers.attention import prepare_replacement
from balf.layers.geometry import Side
from balf.layers.selection import LayerSelection
from balf.pipeline.context import CompressionContext, DataOptions
from balf.pipeline.input_checks import check_model_and_options
from balf.pipeline.install import install_factorized
from balf.pipeline.rollback import Rollback
from balf.pipeline.strategy import CalibrationStrategy, InstallPlan, StrategyRunner, WholeModel
from balf.ranks.configs import CompressionConfig
from balf.ranks.costs import LayerCandidate
from balf.ranks.latency.source import LatencySource
from balf.ranks.latency.table import LatencyTable
from balf.report import Report
from balf.report.build import fill_totals, layer_report

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
        strategy: how activation-aware configs calibrate (:mod:`balf.pipeline.strategy`):
            ``None`` or :class:`balf.WholeModel` for whole-model calibration (one pass, every
            layer's statistics at once), or :class:`balf.BlockByBlock` (one block at a time on
            inputs from the blocks already compressed; same ranks, less memory; no ``cache``).

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
        strategy: CalibrationStrategy | None = None,
    ) -> None:
        check_model_and_options(model, batch_size)
        strategy = WholeModel() if strategy is None else strategy
        if not isinstance(strategy, CalibrationStrategy):
            raise BALFError(
                "strategy must be None or a calibration strategy (balf.WholeModel(), "
                f"balf.BlockByBlock(...)), got {strategy!r}"
            )
        if cache is not None and not strategy.uses_cache:
            raise BALFError(
                f"{type(strategy).__name__} calibration does not use a Cache (its statistics "
                "depend on the ranks); pass cache=None"
            )
        self.strategy = strategy
        self.model = model
        given = data_or_statistics if isinstance(data_or_statistics, Statistics) else None
        data = DataOptions(
            None if given is not None else data_or_statistics,
            forward, batch_size, max_batches, side, progress,
        )  # fmt: skip
        self.context = CompressionContext(
            model,
            LayerSelection.of(model, layers, exclude),
            data,
            statistics=given,
            cache=cache,
            latency=latency,
        )
        strategy.check(self.context)
        self._runners: dict[bool, StrategyRunner] = {}
        self._consumed = False
        self._warned_rows = False

    # -- what the context holds ----------------------------------------------------------------

    @property
    def selection(self) -> LayerSelection:
        """The chosen layers (``targets``, ``aliases``) and those left dense (``skipped``)."""
        return self.context.selection

    @property
    def targets(self) -> dict[str, nn.Module]:
        """The layers to factorize by (first) name, in model order."""
        return self.context.targets

    @property
    def aliases(self) -> dict[str, list[str]]:
        """Every name each target is registered under."""
        return self.context.aliases

    @property
    def skipped(self) -> dict[str, str]:
        """The layers left dense, with the reason."""
        return self.context.skipped

    @property
    def has_data(self) -> bool:
        """Whether activation-aware modes can run (data or statistics were given)."""
        return self.context.has_data

    @property
    def statistics(self) -> Statistics:
        """Whole-model calibration statistics, collected (or loaded from the cache) on first use."""
        return self.context.statistics

    @property
    def latency(self) -> LatencyTable | dict[str, Any] | None:
        """The latency table (once given or measured), else the options to measure one."""
        return self.context.latency.table or self.context.latency.options

    @latency.setter
    def latency(self, value: LatencyTable | dict[str, Any] | None) -> None:
        self.context.latency = LatencySource(value)

    def latency_table(self, rank_multiple: int = 1) -> LatencyTable:
        """The measured latencies of the chosen layers (see
        :meth:`CompressionContext.latency_table`)."""
        return self.context.latency_table(rank_multiple)

    def decompositions(self, activation_aware: bool) -> dict:
        """Per-layer whole-model decompositions (activation-aware or plain SVD), computed once."""
        return self.context.decompositions(activation_aware)

    def candidates(self, activation_aware: bool) -> list[LayerCandidate]:
        """What the rank rules see: cost model and energy curve of every chosen layer."""
        return self._runner(activation_aware).candidates(activation_aware)

    # -- the pipeline ---------------------------------------------------------------------------

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
        ctx, aware = self.context, config.activation_aware
        ctx.timings = {}
        ctx.objective_selection = None
        runner = self._runner(aware)
        candidates = config.prepare(runner.candidates(aware), ctx)
        with ctx.timed("measurement"):
            baseline = ctx.baseline_counts()
        with ctx.timed("allocation"):
            ranks, allocation = config.select_ranks(candidates)
        plan = InstallPlan.of(candidates, ranks, aware)
        ctx.check_layer_values(_ordered(plan))  # before anything is installed
        rollback = (
            Rollback(self.model, _ordered(plan), ctx.targets, ctx.aliases) if inplace else None
        )
        try:
            out = self._copy_model(plan.replaced, inplace)
            out, report = self._install(runner, out, candidates, plan, config)
            has_flops = all(c.cost.rows_per_sample is not None for c in candidates)
            fill_totals(report, candidates, ranks, allocation, config, has_flops)
            with ctx.timed("measurement"):
                report.model_params_before, report.model_flops_before = baseline
                report.model_params_after = count_params(out)
                if report.model_flops_before is not None:
                    report.model_flops_after = ctx.count_flops(out)
        except BaseException as exc:  # an interrupt too: never leave a half-compressed model
            if rollback is not None:
                self._restore(rollback, exc)
            raise
        report.timings = dict(ctx.timings)
        if ctx.objective_selection is not None and report.objective is not None:
            report.objective["selection"] = dict(ctx.objective_selection)
        if aware:
            max_ranks = {c.name: c.cost.geometry.max_rank for c in candidates}
            rows, samples = runner.calibration_rows(), runner.calibration_samples()
            report.under_calibrated = under_calibrated(rows, max_ranks)
            if not self._warned_rows:  # once per Compressor
                warn_under_calibrated(report.under_calibrated, samples)
                self._warned_rows = True
            report.strategy = runner.describe()
        log.info(report.summary())
        return out, report

    def _restore(self, rollback: Rollback, exc: BaseException) -> None:
        """Put the caller's model back after a failed in-place compression, and say so."""
        restored = rollback.restore()
        self._consumed = False  # the model is the original again: the compressor can retry
        listed = ", ".join(restored[:8]) + (" …" if len(restored) > 8 else "")
        exc.add_note(
            f"balf: compress(..., inplace=True) failed; the model was restored: the "
            f"{len(restored)} layer(s) already replaced ({listed or 'none'}) are dense again and "
            "every attention module is as it was"
        )

    def _runner(self, activation_aware: bool) -> StrategyRunner:
        """The strategy's runner (data-free configs: whole-model), made on first use."""
        if activation_aware not in self._runners:
            strategy = self.strategy if activation_aware else WholeModel()
            self._runners[activation_aware] = strategy.runner(self.context)
        return self._runners[activation_aware]

    def _copy_model(self, replaced: frozenset[str], inplace: bool) -> nn.Module:
        """The model to install the factorized layers in: a copy, or the model if ``inplace``."""
        ctx = self.context
        with ctx.timed("copy"):
            if inplace:
                out, self._consumed = self.model, True
            else:
                # copy everything but the layers about to be replaced (they would be thrown
                # away); every name of an aliased layer is replaced, so no original is left
                memo = {id(ctx.targets[name]): ctx.targets[name] for name in replaced}
                out = copy.deepcopy(self.model, memo)
            # attention modules with a projection to replace are unpacked for good
            prepare_replacement(out, [a for n in replaced for a in ctx.aliases[n]])
        return out

    def _install(
        self,
        runner: StrategyRunner,
        out: nn.Module,
        candidates: list[LayerCandidate],
        plan: InstallPlan,
        config: CompressionConfig,
    ) -> tuple[nn.Module, Report]:
        """Install the factorized layers in ``out`` in the runner's order; report each layer."""
        ctx = self.context
        report = Report(config=config.to_dict(), mode=config.mode, skipped=dict(ctx.skipped))
        by_name = {c.name: c for c in candidates}
        shapes = ctx.layer_shapes() if plan.replaced else {}
        energies: dict[str, Any] | None = {} if plan.activation_aware else None
        decompositions = runner.decompositions_for_install(out, plan)
        with ctx.timed("replacement"), contextlib.closing(decompositions):
            installed = None  # sent back: the module just installed (None: kept dense)
            while (item := _send(decompositions, installed)) is not None:
                name, dec = item
                rank, factorized, installed = plan.ranks[name], name in plan.replaced, None
                if factorized:
                    dense, aliases = ctx.targets[name], ctx.aliases[name]
                    out = install_factorized(out, name, dense, dec, rank, aliases, shapes.get(name))
                    installed = out.get_submodule(name) if name else out
                if energies is not None:
                    energies[name] = dec.energies().cpu().numpy()
                entry = layer_report(by_name[name], rank, factorized, dec, energies, config)
                report.layers[name] = entry
        for name, note in runner.layer_notes().items():
            if note and name in report.layers:
                report.layers[name].note = note
        missing = [n for n in plan.ranks if n not in report.layers]
        if missing:
            raise RuntimeError(f"the calibration strategy gave no decomposition of {missing}")
        report.layers = {n: report.layers[n] for n in plan.ranks}  # candidate (model) order
        return out, report


def _ordered(plan: InstallPlan) -> list[str]:
    """The layers ``plan`` replaces, in model order."""
    return [name for name in plan.ranks if name in plan.replaced]


def _send(generator: Generator, value: Any) -> Any:
    """``generator.send(value)``, or ``None`` once it is exhausted."""
    try:
        return generator.send(value)
    except StopIteration:
        return None


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
