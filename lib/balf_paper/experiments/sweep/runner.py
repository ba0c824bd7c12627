"""The one sweep runner: compress a task's model at every knob of a mode and score each point.

A :class:`Runner` serves one :class:`~balf_paper.experiments.tasks.base.Task` (any kind: image
classification, language modelling, sentence similarity). :meth:`Runner.sweep` runs one sweep
(:class:`~balf_paper.experiments.sweep.config.SweepConfig`) into a run folder;
:meth:`Runner.sweeps` several, sweep after sweep or knob after knob. Every run folder keeps
``results.json`` (:mod:`~balf_paper.experiments.sweep.store`: rewritten atomically after every
point, resumed by a rerun, one process at a time: :mod:`~balf_paper.experiments.sweep.lock`),
``config.json`` (resolved), ``environment.json`` and ``command.txt``. Points are
:class:`~balf_paper.experiments.sweep.points.ResultPoint` objects (one format for every task).

Shared work: the runner makes one :class:`balf.Compressor` per calibration strategy (statistics
and decompositions computed once for every sweep), evaluates the uncompressed model once per
evaluation (:class:`DenseEvaluations`, shareable between runners of tasks with the same
``evaluation_id``: seeds, calibration sizes, calibration sets), and scores a compressed model
that is identical to one already scored (same strategy, same factorization, same ranks) once:
the later point records ``same_ranks_as``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from balf.calibration.distributed import is_main_process
from balf.counting.flops import count_flops, count_params
from balf.errors import BudgetError
from balf.io.atomic import atomic_json_dump, atomic_write_text
from balf.io.cache import Cache
from balf.pipeline.compressor import Compressor
from balf.ranks.configs import CompressionConfig
from balf.ranks.modes import mode_spec
from balf_paper.experiments.environment import command_line, environment_info
from balf_paper.experiments.sweep.config import SweepConfig, default_knobs
from balf_paper.experiments.sweep.lock import run_folder_lock
from balf_paper.experiments.sweep.methods import apply_method, method_for, strategy_for
from balf_paper.experiments.sweep.points import ORIGINAL, ResultPoint, SkippedPoint, knob_key
from balf_paper.experiments.sweep.save import check_save_dir, save_point_model, wants_save
from balf_paper.experiments.sweep.store import (
    add_point,
    add_skipped,
    done_keys,
    drop_points,
    resume,
)
from balf_paper.experiments.tasks.base import Task
from balf_paper.experiments.tasks.image.task import image_task

__all__ = ["DenseEvaluations", "RunOptions", "Runner", "SweepConfig", "default_knobs", "run_sweep"]

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """How sweeps run; none of it is part of a sweep's identity.

    Attributes:
        device: where the model is compressed and evaluated.
        cache: a :class:`balf.Cache` for whole-model statistics and decompositions.
        progress: progress bars.
        stop_after: compute at most this many new points per sweep, then stop (tests, limits).
        argv: the command's arguments, recorded in ``command.txt`` (default: ``sys.argv``).
        save_knobs: with a sweep's ``save_dir``, save only these knob values (default: all).
        reuse_identical: score a model identical to one already scored only once.
    """

    device: torch.device | str = "cpu"
    cache: Cache | None = None
    progress: bool = True
    stop_after: int | None = None
    argv: Sequence[str] | None = None
    save_knobs: Sequence[float] | None = None
    reuse_identical: bool = True


class DenseEvaluations:
    """The uncompressed model's point per evaluation (a task's ``evaluation_id``)."""

    def __init__(self) -> None:
        self._points: dict[str, ResultPoint] = {}

    @staticmethod
    def _key(task: Task) -> str:
        return task.evaluation_id or f"task-{id(task)}"

    def get(self, task: Task) -> ResultPoint | None:
        """The stored point of ``task``'s evaluation, if any."""
        return self._points.get(self._key(task))

    def put(self, task: Task, point: ResultPoint) -> None:
        """Remember ``point`` as the uncompressed model's point of ``task``'s evaluation."""
        self._points[self._key(task)] = point


class Runner:
    """Runs sweeps of one task (see the module docstring).

    Args:
        task: what is compressed and how it is scored.
        options: how the sweeps run.
        dense: shared uncompressed points (several runners of one evaluation share it).
        compressors: ready compressors by strategy name (default: made on first use).

    Example:
        >>> runner = Runner(task, RunOptions(progress=False))  # doctest: +SKIP
        >>> runner.sweep(SweepConfig("cifar10", "resnet20", "flops_auto", [0.5], 1024),
        ...              "runs/resnet20/flops_auto")  # doctest: +SKIP
    """

    def __init__(
        self,
        task: Task,
        options: RunOptions | None = None,
        dense: DenseEvaluations | None = None,
        compressors: dict[str, Compressor] | None = None,
    ) -> None:
        self.task = task
        self.options = options or RunOptions()
        self.dense = dense or DenseEvaluations()
        self._compressors: dict[str, Compressor] = dict(compressors or {})
        self._scored: dict[tuple, tuple[str, ResultPoint]] = {}
        self._counts: tuple[int | None, int] | None = None
        self.new_points = 0
        """Points computed (not resumed) by this runner so far."""

    # -- public --------------------------------------------------------------------------------

    def sweep(
        self, config: SweepConfig, out_dir: str | Path, *, save_dir: str | Path | None = None
    ) -> dict[str, Any]:
        """Run (or resume) one sweep into ``out_dir``; its results (as in ``results.json``).

        ``save_dir``: save every newly computed compressed model there with :func:`balf.save`
        (``<knob>.safetensors``); the point gets ``saved_model``.
        """
        return self.sweeps([(config, out_dir, save_dir)])[0]

    def sweeps(
        self,
        planned: Sequence[tuple[SweepConfig, str | Path, str | Path | None]],
        *,
        knob_major: bool = False,
    ) -> list[dict[str, Any]]:
        """Run ``(config, out_dir, save_dir)`` sweeps: one after the other, or with
        ``knob_major`` every sweep's first knob, then every sweep's second, ... (the order the
        knobs are listed in, across sweeps). Every run folder is locked for the duration."""
        with contextlib.ExitStack() as stack:
            runs = [stack.enter_context(_Run(self, c, Path(o), s)) for c, o, s in planned]
            if knob_major:
                knobs = list(dict.fromkeys(k for run in runs for k in run.todo))
                for knob in tqdm(knobs, unit="knob", disable=not self.options.progress):
                    for run in runs:
                        if knob in run.todo:
                            run.compute(knob)
            else:
                for run in runs:
                    desc = f"{run.config.model} {run.config.mode}"
                    hide = not self.options.progress
                    for knob in tqdm(run.todo, desc=desc, unit="point", disable=hide):
                        run.compute(knob)
        return [run.results for run in runs]

    def compressor(self, config: SweepConfig) -> Compressor:
        """The compressor of ``config``'s calibration strategy (made once)."""
        key = _strategy_key(config)
        if key not in self._compressors:
            strategy = strategy_for(config)
            uses_cache = strategy is None or strategy.uses_cache
            self._compressors[key] = Compressor(
                self.task.model, self.task.calibration, self.task.layers,
                cache=self.options.cache if uses_cache else None,
                progress=self.options.progress, forward=self.task.forward, strategy=strategy,
            )  # fmt: skip
        return self._compressors[key]

    # -- points --------------------------------------------------------------------------------

    def counts(self) -> tuple[int | None, int]:
        """Whole-model FLOPs and parameters of the uncompressed model (measured once)."""
        if self._counts is None:
            self._counts = self._measure(self.task.model)
        return self._counts

    def _measure(self, model: nn.Module) -> tuple[int | None, int]:
        example = self.task.example_input
        flops = None if example is None else count_flops(model, example, forward=self.task.forward)
        return flops, count_params(model)

    def dense_point(self, stored: ResultPoint | None = None) -> ResultPoint:
        """The uncompressed model's point (evaluated once per evaluation; a shared or
        ``stored`` point that lacks extra metrics asked for gets them, the rest is kept)."""
        point = self.dense.get(self.task) or stored
        if point is not None and not self.task.is_complete(point.metrics):
            metrics = {**point.metrics, **self.task.extra_scores(self.task.model)}
            point = dataclasses.replace(point, metrics=metrics)
            self.dense.put(self.task, point)
        if point is None:
            start = time.perf_counter()
            scores = self.task.score(self.task.model)
            flops, params = self.counts()
            point = ResultPoint.from_dict({
                "knob": ORIGINAL, "metrics": dict(scores.metrics), "eval_samples": scores.samples,
                "flops_ratio": 1.0, "params_ratio": 1.0, "flops": flops, "params": params,
                "ranks": {}, "eval_seconds": time.perf_counter() - start,
            })  # fmt: skip
            self.dense.put(self.task, point)
        return point

    def _identity(self, config: SweepConfig, point: ResultPoint) -> tuple | None:
        """What makes two compressed models identical (``None``: never shared)."""
        spec = mode_spec(config.mode)
        if not issubclass(spec.config_class, CompressionConfig) or not point.ranks:
            return None
        aware = getattr(spec.make(0.5, **config.method_kwargs()), "activation_aware", None)
        ranks = tuple(sorted(point.ranks.items()))
        return (_strategy_key(config), aware, ranks)

    def remember(self, config: SweepConfig, point: ResultPoint) -> None:
        """Offer a scored point for reuse by identical models (stored points included; not
        one that lacks extra metrics asked for)."""
        key = self._identity(config, point)
        complete = self.task.is_complete(point.metrics)
        if key is not None and point.same_ranks_as is None and complete:
            self._scored.setdefault(key, (config.mode, point))

    def compressed_point(
        self, config: SweepConfig, knob: float, small: nn.Module, fields: dict[str, Any]
    ) -> ResultPoint:
        """The point of ``small`` at ``knob``: scored (or reused), measured, with ``fields``."""
        flops0, params0 = self.counts()
        flops, params = self._measure(small)
        measured = {
            "flops_ratio": None if flops is None or not flops0 else flops / flops0,
            "params_ratio": params / params0, "flops": flops, "params": params,
        }  # fmt: skip
        draft = ResultPoint.from_dict({"knob": knob, "metrics": {}, **measured, **fields})
        key = self._identity(config, draft) if self.options.reuse_identical else None
        if key in self._scored:
            mode, twin = self._scored[key]
            scored = {"metrics": dict(twin.metrics), "eval_samples": twin.eval_samples}
            after = {"same_ranks_as": mode}
        else:
            start = time.perf_counter()
            scores = self.task.score(small)
            scored = {"metrics": dict(scores.metrics), "eval_samples": scores.samples}
            after = {"eval_seconds": time.perf_counter() - start}
        point = ResultPoint.from_dict({"knob": knob, **scored, **measured, **fields, **after})
        self.remember(config, point)
        return point


def _strategy_key(config: SweepConfig) -> str:
    return config.strategy + json.dumps(config.strategy_options, sort_keys=True, default=str)


class _Run:
    """One run folder while a sweep runs in it: locked, resumed, filled point by point."""

    def __init__(
        self, runner: Runner, config: SweepConfig, out_dir: Path, save_dir: str | Path | None
    ) -> None:
        self.runner, self.config, self.out_dir = runner, config, out_dir
        self.save_dir = None if save_dir is None else Path(save_dir)
        self.path = out_dir / "results.json"
        self.new = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _Run:
        if self.save_dir is not None:  # before any point is computed
            check_save_dir(self.save_dir)
        self._stack.enter_context(run_folder_lock(self.out_dir))
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def _start(self) -> None:
        runner, options = self.runner, self.runner.options
        env = environment_info(options.device)
        self.results = resume(self.path, self.config, env, runner.task.metric)
        if is_main_process():
            atomic_json_dump(asdict(self.config), self.out_dir / "config.json")
            atomic_json_dump(env, self.out_dir / "environment.json")
            atomic_write_text(command_line(options.argv) + "\n", self.out_dir / "command.txt")
        runner.task.model = runner.task.model.to(options.device).eval()
        done = done_keys(self.results, self.path)
        flops0, params0 = runner.counts()
        self.results["original"] = {"flops": flops0, "params": params0}
        stored = {p.key: p for p in map(ResultPoint.from_dict, self.results["points"])}
        stale = {k for k, p in stored.items() if not runner.task.is_complete(p.metrics)}
        drop_points(self.results, stale)  # computed again: scores asked for since
        done -= stale
        if ORIGINAL not in done:
            add_point(self.results, runner.dense_point(stored.get(ORIGINAL)), self.path)
        for point in stored.values():
            runner.remember(self.config, point)
        self.todo = [k for k in self.config.knobs if knob_key(k) not in done]

    def compute(self, knob: float) -> None:
        """Compress at ``knob``, score, store (a budget that cannot be met: a skipped knob)."""
        stop_after = self.runner.options.stop_after
        if stop_after is not None and self.new >= stop_after:
            return
        config, runner = self.config, self.runner
        spec = mode_spec(config.mode)
        is_balf = issubclass(spec.config_class, CompressionConfig)
        compressor = runner.compressor(config) if is_balf else None
        start = time.perf_counter()
        try:
            method = method_for(config, knob, compressor)
            model, calibration = runner.task.model, runner.task.calibration
            seed = config.seed
            small, fields, report = apply_method(method, model, compressor, calibration, seed)
        except BudgetError as exc:
            log.warning("%s %g skipped: %s", config.mode, knob, exc)
            add_skipped(self.results, SkippedPoint(knob, str(exc)), self.path)
            return
        fields["compress_seconds"] = time.perf_counter() - start
        if wants_save(method, knob, self.save_dir, runner.options.save_knobs):
            path = self.save_dir / f"{knob_key(knob)}.safetensors"
            fields["saved_model"] = save_point_model(small, report, path)
        point = runner.compressed_point(config, knob, small, fields)
        add_point(self.results, point, self.path)
        self.new += 1
        runner.new_points += 1


def run_sweep(
    config: SweepConfig,
    model: nn.Module,
    calibration: Iterable | None,
    evaluation: Iterable,
    out_dir: str | Path,
    *,
    example_input: Tensor,
    evaluate_fn: Any = None,
    compressor: Compressor | None = None,
    save_dir: str | Path | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run (or resume) an image-classification sweep: a :class:`Runner` of
    :func:`~balf_paper.experiments.tasks.image.task.image_task`.

    Args:
        config: the sweep.
        model: the trained model (not modified); calibration: its calibration batches
            (``None`` for data-free modes); evaluation: ``(images, labels)`` batches.
        out_dir: run directory (created).
        example_input: one input ``(1, ...)`` for whole-model FLOP counts.
        evaluate_fn: replaces the accuracy/loss evaluation (``model -> metrics dict`` with
            ``accuracy`` and ``loss``).
        compressor: a :class:`balf.Compressor` of ``model`` shared across sweeps.
        save_dir: save every newly computed compressed model there (:meth:`Runner.sweep`).
        **options: :class:`RunOptions` fields (``device``, ``cache``, ``progress``,
            ``stop_after``, ``argv``, ``save_knobs``).
    """
    run_options = RunOptions(**options)
    task = image_task(
        model, evaluation, example_input, calibration=calibration, device=run_options.device,
        progress=run_options.progress, evaluate_fn=evaluate_fn,
    )  # fmt: skip
    compressors = {_strategy_key(config): compressor} if compressor is not None else None
    return Runner(task, run_options, compressors=compressors).sweep(
        config, out_dir, save_dir=save_dir
    )
