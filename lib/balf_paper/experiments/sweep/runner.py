"""The one sweep runner: compress a model at every knob value of a mode and evaluate each point.

``<out_dir>/results.json`` holds ``{"config": …, "environment": …, "points": [...]}``; each point
has ``knob`` (the mode's value, or ``"original"``), ``accuracy`` (0–1), ``loss``,
``flops_ratio`` and ``params_ratio`` (whole model, measured), the per-layer ``ranks`` and more
(Model Folding modes: empty ``ranks`` and the ``kept_channels`` of every channel group): a
:class:`~balf_paper.experiments.sweep.points.ResultPoint` as JSON. The file
(:mod:`~balf_paper.experiments.sweep.store`) is rewritten atomically after every point, and a rerun
skips the points already there.
The run directory also keeps ``config.json`` (resolved), ``environment.json`` and ``command.txt``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from balf.calibration.distributed import is_main_process
from balf.compressor import Compressor
from balf.counting.flops import count_flops, count_params
from balf.errors import BALFError, BudgetError
from balf.io.atomic import atomic_json_dump, atomic_write_text
from balf.io.serialization import save as balf_save
from balf.ranks.configs import CompressionConfig
from balf.ranks.modes import MethodConfig, mode_spec
from balf_paper.experiments.environment import command_line, environment_info
from balf_paper.experiments.modes import sweep_values_of
from balf_paper.experiments.sweep.lock import locks_out_dir
from balf_paper.experiments.sweep.points import ResultPoint, SkippedPoint, knob_key
from balf_paper.experiments.sweep.save import check_save_dir
from balf_paper.experiments.sweep.store import (
    add_point,
    add_skipped,
    done_keys,
    load_results,
    resume,
)
from balf_paper.experiments.tasks.image.evaluation import EvalResult, evaluate
from balf_paper.folding import FoldingConfig, kept_channels
from balf_paper.models import THIRD_PARTY_CHECKPOINTS

__all__ = ["SWEEP_VALUES", "SweepConfig", "default_knobs", "load_results", "run_sweep"]

log = logging.getLogger(__name__)

SWEEP_VALUES = "sweep_values.json"
"""The paper's sweep values, shipped as package data of :mod:`balf_paper.experiments`."""


@dataclass
class SweepConfig:
    """Everything that defines a sweep (and must match for a rerun to resume it).

    Attributes:
        dataset, model, mode: what is compressed and how (a registered mode,
            :func:`balf.ranks.modes.registered_modes`).
        knobs: the mode's values (keep-ratios, energy thresholds, or Model Folding's ``keep``).
        calib_size: calibration images; seed: their draw (and of evaluation subsets).
        n_iters: allocator iterations (allocator modes).
        eval_size: evaluation subset size (``None``: full set).
        weights: identity of the model's weights (checkpoint path and hash, or random seed).
        evaluation: settings of a non-standard evaluation (e.g. corruptions and severities).
        extra: free-form settings recorded with the results (checkpoint, batch size, ...).
        eval_seed: seed of the evaluation subset when it differs from ``seed`` (``--seeds``);
            ``None``: ``seed``.
        calibration_shift: the corruption applied to the calibration images (``calib-shift``
            experiment: corruption, severity, cache manifest digest); empty: clean images.
    """

    dataset: str
    model: str
    mode: str
    knobs: list[float]
    calib_size: int
    seed: int = 0
    n_iters: int = 300
    eval_size: int | None = None
    weights: str = ""
    evaluation: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    eval_seed: int | None = None
    calibration_shift: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        mode_spec(self.mode)  # BALFError naming the known modes
        if not self.knobs:
            raise BALFError("a sweep needs at least one knob value")

    def identity(self) -> dict[str, Any]:
        """The fields that must match for results to be resumed (all but the knob list)."""
        d = asdict(self)
        d.pop("knobs")
        d.pop("extra")
        return d


def default_knobs(mode: str, model: str, path: str | Path | None = None) -> list[float]:
    """The paper's sweep values for ``mode`` and ``model``.

    The mode's sweep-values key (:func:`balf_paper.experiments.modes.sweep_values_of`) names
    its entry in the table (``path``, or
    by default the package's :data:`SWEEP_VALUES`): a list, or a table of lists by model name.
    A third-party option-A ResNet (``resnet20a``) takes the values of the same-depth paper model.
    """
    mode_spec(mode)  # BALFError naming the known modes
    key = sweep_values_of(mode)
    if key is None:
        raise BALFError(f"mode {mode!r} has no default knobs; pass knobs explicitly")
    if path is None:
        text = resources.files("balf_paper.experiments").joinpath(SWEEP_VALUES).read_text()
    else:
        text = Path(path).read_text()
    values = json.loads(text)[key]
    if isinstance(values, dict):
        if model in THIRD_PARTY_CHECKPOINTS and model not in values and model[:-1] in values:
            model = model[:-1]
        if model not in values:
            raise BALFError(f"no default {mode} knobs for {model!r}; pass knobs explicitly")
        values = values[model]
    return list(values)


@locks_out_dir  # one process per run folder: no finished point is lost
def run_sweep(
    config: SweepConfig,
    model: nn.Module,
    calibration: Iterable | None,
    evaluation: Iterable,
    out_dir: str | Path,
    *,
    example_input: Tensor,
    device: torch.device | str = "cpu",
    cache=None,
    progress: bool = True,
    evaluate_fn: Callable[[nn.Module], dict[str, Any]] | None = None,
    stop_after: int | None = None,
    original: dict[str, Any] | None = None,
    compressor: Compressor | None = None,
    argv: Sequence[str] | None = None,
    save_dir: str | Path | None = None,
    save_knobs: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a sweep and return the results dict written to ``results.json``.

    Args:
        config: the sweep.
        model: the trained model (not modified).
        calibration: calibration batches (``None`` for data-free modes).
        evaluation: ``(images, labels)`` batches for accuracy and loss.
        out_dir: run directory (created).
        example_input: one input ``(1, ...)`` for whole-model FLOP counts.
        cache: optional :class:`balf.Cache`.
        evaluate_fn: replaces the accuracy/loss evaluation; returns the metrics of a point
            (e.g. per-corruption accuracies). Must include ``accuracy`` and ``loss``.
        stop_after: compute at most this many new points, then return (tests, time limits).
        original: the uncompressed model's point from another sweep of the same model and
            evaluation data, reused instead of evaluating the model again.
        compressor: a :class:`balf.Compressor` of ``model`` shared across sweeps (statistics
            and decompositions computed once); made from ``calibration`` when ``None``.
        argv: the script's arguments, recorded in ``command.txt`` (default: ``sys.argv``).
        save_dir: save every newly computed compressed model there with :func:`balf.save`
            (``<knob>.safetensors``, the report in the header's ``"report"``); the point gets
            ``saved_model``. Model Folding modes change the architecture and are not saved.
        save_knobs: only these knob values (default: all).
    """
    out_dir = Path(out_dir)
    if save_dir is not None:  # before any point is computed
        check_save_dir(save_dir)
    results_path = out_dir / "results.json"
    results = _start(config, out_dir, device, argv)
    model = model.to(device).eval()
    done = done_keys(results, results_path)
    maker = _PointMaker(evaluation, evaluate_fn, example_input.to(device), device, progress)
    maker.set_original(model)
    results["original"] = {"flops": maker.flops0, "params": maker.params0}
    if "original" not in done:
        reused = None if original is None else ResultPoint.from_dict(original)
        add_point(results, reused or maker.original(model), results_path)
    if compressor is None and issubclass(mode_spec(config.mode).config_class, CompressionConfig):
        compressor = Compressor(model, calibration, cache=cache, progress=progress)
    todo = [k for k in config.knobs if knob_key(k) not in done]
    new, desc = 0, f"{config.model} {config.mode}"
    for knob in tqdm(todo, desc=desc, unit="point", disable=not progress):
        if stop_after is not None and new >= stop_after:
            break
        try:
            small, fields = _compress_point(config, knob, model, compressor, calibration)
        except BudgetError as exc:
            log.warning("%s %g skipped: %s", config.mode, knob, exc)
            add_skipped(results, SkippedPoint(knob, str(exc)), results_path)
            continue
        report = fields.pop("report", None)
        point = maker.compressed(knob, small, fields)
        if _wants_save(config, knob, save_dir, save_knobs):
            point = _save(small, report, Path(save_dir) / f"{knob_key(knob)}.safetensors", point)
        add_point(results, point, results_path)
        new += 1
        del small
    return results


def _start(
    config: SweepConfig, out_dir: Path, device: torch.device | str, argv: Sequence[str] | None
) -> dict[str, Any]:
    """Create ``out_dir``, resume its results, write config, environment and command line."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment_info(device)
    results = resume(out_dir / "results.json", config, env)
    if is_main_process():
        atomic_json_dump(asdict(config), out_dir / "config.json")
        atomic_json_dump(env, out_dir / "environment.json")
        atomic_write_text(command_line(argv) + "\n", out_dir / "command.txt")
    return results


@dataclass
class _PointMaker:
    """Evaluates a model and measures its cost into a :class:`ResultPoint`."""

    evaluation: Iterable
    evaluate_fn: Callable[[nn.Module], dict[str, Any]] | None
    example: Tensor
    device: torch.device | str
    progress: bool
    flops0: int = 0
    params0: int = 0

    def set_original(self, model: nn.Module) -> None:
        """Measure the uncompressed model's whole-model FLOPs and parameters."""
        self.flops0, self.params0 = count_flops(model, self.example), count_params(model)

    def metrics(self, model: nn.Module) -> dict[str, Any]:
        """``accuracy``, ``loss`` and the rest of the evaluation of ``model``."""
        if self.evaluate_fn is not None:
            return self.evaluate_fn(model)
        r: EvalResult = evaluate(model, self.evaluation, self.device, progress=self.progress)
        return {"accuracy": r.accuracy, "loss": r.loss, "eval_samples": r.samples}

    def original(self, model: nn.Module) -> ResultPoint:
        """The point of the uncompressed model."""
        start = time.perf_counter()
        point = {"knob": "original", **self.metrics(model), "flops_ratio": 1.0,
                 "params_ratio": 1.0, "flops": self.flops0, "params": self.params0,
                 "ranks": {}}  # fmt: skip
        return ResultPoint.from_dict({**point, "eval_seconds": time.perf_counter() - start})

    def compressed(self, knob: float, small: nn.Module, fields: dict[str, Any]) -> ResultPoint:
        """The point of ``small`` at ``knob``, with the method's ``fields`` (ranks, timings…)."""
        start = time.perf_counter()
        measured = self.metrics(small)
        eval_seconds = time.perf_counter() - start
        flops, params = count_flops(small, self.example), count_params(small)
        point = {"knob": knob, **measured, "flops_ratio": flops / self.flops0,
                 "params_ratio": params / self.params0, "flops": flops, "params": params,
                 **fields}  # fmt: skip
        return ResultPoint.from_dict({**point, "eval_seconds": eval_seconds})


def _save(small: nn.Module, report: Any, path: Path, point: ResultPoint) -> ResultPoint:
    """Save ``small`` (its report in the header) with :func:`balf.save`; ``point`` with
    ``saved_model``."""
    if is_main_process():
        meta = {"report": json.dumps(report.to_dict())} if report is not None else None
        balf_save(small, path, metadata=meta)
    return replace(point, saved_model=str(path))


def _wants_save(
    config: SweepConfig, knob: float, save_dir: Any, save_knobs: Sequence[float] | None
) -> bool:
    if save_dir is None:
        return False
    if issubclass(mode_spec(config.mode).config_class, FoldingConfig):
        log.warning("%s changes the architecture: --save-model skips its points", config.mode)
        return False
    return save_knobs is None or any(math.isclose(knob, k) for k in save_knobs)


def _compress_point(
    config: SweepConfig,
    knob: float,
    model: nn.Module,
    compressor: Compressor | None,
    calibration: Iterable | None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The model compressed at ``knob`` and the method-specific fields of its point."""
    spec = mode_spec(config.mode)
    options = {"n_iters": config.n_iters} if spec.accepts("n_iters") else {}
    method = spec.make(knob, **options)
    return _apply_method(method, model, compressor, calibration, config.seed)


@functools.singledispatch
def _apply_method(
    method: MethodConfig,
    model: nn.Module,
    compressor: Compressor | None,
    calibration: Iterable | None,
    seed: int,
) -> tuple[nn.Module, dict[str, Any]]:
    raise BALFError(f"the sweep runner cannot run a {type(method).__name__}")


@_apply_method.register
def _(method: CompressionConfig, model, compressor, calibration, seed):
    small, report = compressor.compress(method)
    return small, {
        "layer_flops_ratio": report.layer_flops_ratio,
        "layer_params_ratio": report.layer_params_ratio,
        "budget": report.budget,
        "achieved": report.achieved,
        "factorized_layers": sum(lr.factorized for lr in report.layers.values()),
        "ranks": report.ranks,
        "timings": report.timings,
        "report": report,
    }


@_apply_method.register
def _(method: FoldingConfig, model, compressor, calibration, seed):
    """Model Folding of ``model`` (only repair ``"r"`` reads ``calibration``)."""
    start = time.perf_counter()
    small = method.apply(model, calibration, seed=seed)
    return small, {
        "repair": method.repair,
        "kept_channels": kept_channels(model, method.keep),
        "ranks": {},
        "timings": {"fold": time.perf_counter() - start},
    }
