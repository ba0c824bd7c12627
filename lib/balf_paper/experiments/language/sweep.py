"""The language sweep: every (strategy, mode, parameter ratio) point, one JSON file each, resumable.

Points are stored as ``<out>/points/<strategy>/<mode>/<ratio>.json``; a point whose file exists
is not recomputed. Modes and how their knob meets a parameter ratio ρ (of the compressed layers):

* ``params_auto`` / ``flops_auto``: ``BALFConfig(ρ, metric=...)``. In a transformer every Linear
  sees the same tokens, so FLOPs are proportional to parameters layer by layer and both give the
  same ranks: a ``flops_auto`` point whose ranks equal the ``params_auto`` point's reuses its
  evaluation (recorded as ``same_ranks_as``).
* ``uniform_act_aware``: ``UniformConfig(ρ)`` (SVD-LLM's rule: the same ratio in every layer).
* ``energy_act_aware``: ``EnergyConfig(τ)`` with τ the largest threshold whose ranks keep at most
  ρ of the parameters (bisection on the energy curves; τ is recorded).
* ``uniform`` (plain SVD, data-free): ``UniformConfig(ρ, activation_aware=False)``; it does not
  depend on the calibration strategy and is run once, under ``whole``.

Strategies: ``whole`` (whole-model calibration), ``block`` (:class:`balf.BlockByBlock`, blocks
auto-detected: the decoder/encoder layers) and ``block-refit`` (block by block with the anchored
refit, ``BlockByBlock(refit=AnchoredRefit(β, ridge))``: ``--refit-beta``, ``--refit-ridge``; its
points record the refit, and a stored point of another refit is computed again).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import balf
from balf.errors import BudgetError
from balf.io.atomic import atomic_json_dump, read_json_or_none
from balf.layers.selection import resolve_layers
from balf.ranks.configs import CompressionConfig, LayerCandidate
from balf.ranks.objectives import SensitivityObjective
from balf_paper.experiments.language.lm_eval_tasks import POINT_KEY
from balf_paper.experiments.language.tasks import Task

__all__ = [
    "DEFAULT_STRATEGIES",
    "MODES",
    "STRATEGIES",
    "energy_threshold_for",
    "point_path",
    "run_points",
]

log = logging.getLogger(__name__)

MODES = (
    "params_auto",
    "flops_auto",
    "uniform_act_aware",
    "energy_act_aware",
    "uniform",
    "params_auto_sensitivity",
    "params_auto_log_energy",
)
#: Calibration samples (windows or sentences) the sensitivity probes of ``*_sensitivity`` modes
#: run on, unless ``--probe-samples`` says otherwise (each layer's probe is one forward pass
#: over them).
PROBE_SAMPLES = 2
STRATEGIES = ("whole", "block", "block-refit")
#: What a sweep runs unless ``--strategies`` says otherwise (the refit costs one more forward
#: pass of every block per config).
DEFAULT_STRATEGIES = ("whole", "block")


def point_path(out: Path, strategy: str, mode: str, ratio: float) -> Path:
    return out / "points" / strategy / mode / f"{ratio:.4f}.json"


def _params_ratio(candidates: list[LayerCandidate], ranks: list[int]) -> float:
    before = sum(c.cost.dense("params") for c in candidates)
    after = sum(c.cost.realised(r, "params") for c, r in zip(candidates, ranks, strict=True))
    return after / before


def energy_threshold_for(candidates: list[LayerCandidate], ratio: float, steps: int = 60) -> float:
    """The largest energy threshold τ whose ranks keep at most ``ratio`` of the parameters.

    Raises:
        BudgetError: even rank 1 everywhere keeps more than ``ratio``.
    """

    def kept(tau: float) -> float:
        return _params_ratio(candidates, balf.EnergyConfig(tau).select_ranks(candidates)[0])

    lo, hi = 1e-12, 1.0
    if kept(lo) > ratio:
        raise BudgetError(f"no energy threshold keeps at most {ratio:g} of the parameters")
    if kept(hi) <= ratio:
        return hi
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if kept(mid) <= ratio else (lo, mid)
    return lo


class _Strategy:
    """One calibration strategy's Compressor, made on first use."""

    def __init__(
        self,
        task: Task,
        name: str,
        layers: list[str],
        probe_samples: int = PROBE_SAMPLES,
        refit: balf.AnchoredRefit | None = None,
    ) -> None:
        self.task, self.name, self.layers = task, name, layers
        self.probe_samples = probe_samples
        self.refit = (refit or balf.AnchoredRefit()) if name == "block-refit" else None
        self._compressor: balf.Compressor | None = None

    @property
    def compressor(self) -> balf.Compressor:
        if self._compressor is None:
            strategy = None
            if self.name in ("block", "block-refit"):
                strategy = balf.BlockByBlock(refit=self.refit)
            self._compressor = balf.Compressor(
                self.task.model,
                self.task.calibration,
                self.layers,
                forward=self.task.forward,
                progress=False,
                strategy=strategy,
            )
        return self._compressor

    def config(self, mode: str, ratio: float) -> tuple[CompressionConfig, dict[str, Any]]:
        extra: dict[str, Any] = {}
        if mode == "energy_act_aware":
            tau = energy_threshold_for(self.compressor.candidates(True), ratio)
            extra["threshold"] = tau
            return balf.EnergyConfig(tau), extra
        if mode == "uniform":
            return balf.UniformConfig(ratio, activation_aware=False), extra
        config = balf.config_for_mode(mode, ratio)
        if isinstance(getattr(config, "objective", None), SensitivityObjective):
            probes = SensitivityObjective(probe_samples=self.probe_samples)
            config = dataclasses.replace(config, objective=probes)
        return config, extra


def _layers(task: Task) -> list[str]:
    targets, _ = resolve_layers(task.model)
    return [n for n in targets if n not in set(task.exclude)]


def run_points(
    task: Task,
    out: Path,
    modes: list[str],
    ratios: list[float],
    strategies: list[str],
    probe_samples: int = PROBE_SAMPLES,
    refit: balf.AnchoredRefit | None = None,
) -> list[dict[str, Any]]:
    """Compute every missing point; returns the points computed in this call.

    Args:
        refit: the anchored refit of the ``block-refit`` strategy (``None``: ``AnchoredRefit()``).
    """
    baseline_path = out / "baseline.json"
    baseline = read_json_or_none(baseline_path)
    if baseline is None:
        start = time.perf_counter()
        value = task.evaluate(task.model)
        baseline = {
            "task": task.name,
            task.metric: value,
            "params": balf.count_params(task.model),
            "provenance": task.provenance,
            "data": task.data,
            "seconds": time.perf_counter() - start,
        }
        atomic_json_dump(baseline, baseline_path)
        log.info("uncompressed %s: %.4f", task.metric, value)
    if task.extra_scores is not None and not task.extra_scores.complete(baseline):
        atomic_json_dump({**baseline, **task.extra_scores(task.model)}, baseline_path)
    layers = _layers(task)
    done: list[dict[str, Any]] = []
    runners = {s: _Strategy(task, s, layers, probe_samples, refit) for s in strategies}
    for ratio in ratios:
        for strategy in strategies:
            for mode in modes:
                if mode == "uniform" and strategy != "whole":
                    continue  # data-free: the strategy does not apply
                path = point_path(out, strategy, mode, ratio)
                if path.exists() and _complete(task, read_json_or_none(path), runners[strategy]):
                    continue
                point = _point(task, runners[strategy], out, mode, ratio)
                atomic_json_dump(point, path)
                done.append(point)
                log.info("%s %s %.2f: %s", strategy, mode, ratio, point.get(task.metric))
    return done


def _complete(task: Task, point: dict[str, Any] | None, runner: _Strategy | None = None) -> bool:
    """A stored point holds every score asked for and was computed with the same refit (else it
    is computed again)."""
    if point is None or (runner is not None and _refit_of(runner) != point.get("refit")):
        return False
    return task.extra_scores is None or task.extra_scores.complete(point)


def _refit_of(runner: _Strategy) -> dict[str, Any] | None:
    return runner.refit.to_dict() if runner.refit is not None else None


def _point(task: Task, runner: _Strategy, out: Path, mode: str, ratio: float) -> dict[str, Any]:
    base = {
        "task": task.name,
        "strategy": runner.name,
        "mode": mode,
        "ratio": ratio,
        "provenance": task.provenance,
        "data": task.data,
    }
    if runner.refit is not None:
        base["refit"] = runner.refit.to_dict()
    start = time.perf_counter()
    try:
        config, extra = runner.config(mode, ratio)
    except BudgetError as exc:
        return {**base, "skipped": str(exc)}
    base.update(extra, config=config.to_dict())
    if mode == "flops_auto":
        twin = read_json_or_none(point_path(out, runner.name, "params_auto", ratio))
        candidates = runner.compressor.candidates(True)
        ranks = [  # as a report gives them: the full rank where a layer stays dense
            r if c.cost.is_cheaper(r) else c.cost.geometry.max_rank
            for c, r in zip(candidates, config.select_ranks(candidates)[0], strict=True)
        ]
        same = twin is not None and "ranks" in twin and list(twin["ranks"].values()) == ranks
        if same and _complete(task, twin, runner):
            keep = ("metric_value", task.metric, "layer_params_ratio", "layer_flops_ratio",
                    POINT_KEY)  # fmt: skip
            return {
                **base,
                **{k: twin[k] for k in keep if k in twin},
                "model_params_ratio": twin.get("model_params_ratio"),
                "model_flops_ratio": twin.get("model_flops_ratio"),
                "ranks": twin["ranks"],
                "same_ranks_as": "params_auto",
                "seconds_compress": time.perf_counter() - start,
            }
    try:
        small, report = runner.compressor.compress(config)
    except BudgetError as exc:
        return {**base, "skipped": str(exc)}
    compressed = time.perf_counter() - start
    start = time.perf_counter()
    value = task.evaluate(small)
    extra = task.extra_scores(small) if task.extra_scores is not None else {}
    if runner.refit is not None and report.strategy and "layers" in report.strategy:
        outcome = report.strategy["layers"].values()
        extra["refitted_layers"] = sum(bool(o["refit"]) for o in outcome)
        extra["refit_kept_layers"] = sum(not o["refit"] for o in outcome)
    return {
        **base,
        task.metric: value,
        "metric_value": value,
        **extra,
        "layer_params_ratio": report.layer_params_ratio,
        "layer_flops_ratio": report.layer_flops_ratio,
        "model_params_ratio": report.model_params_ratio,
        "model_flops_ratio": report.model_flops_ratio,
        "ranks": report.ranks,
        "objective": report.objective,
        "timings": report.timings,
        "seconds_compress": compressed,
        "seconds_evaluate": time.perf_counter() - start,
    }
