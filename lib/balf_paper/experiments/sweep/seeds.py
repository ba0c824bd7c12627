"""Several calibration seeds per sweep: where each seed's run lives, and mean ± std over seeds.

``--seeds 0 1 2`` runs a sweep once per seed; the seed picks the calibration subset (the
evaluation subset, when ``--eval-size`` asks for one, stays that of ``--seed``, so every seed is
scored on the same images). Seed ``0`` keeps the run folder of a single-seed run
(``<run dir>/results.json``, so an existing seed-0 sweep is resumed, not recomputed); every other
seed ``k`` has ``<run dir>/seed<k>/results.json``. Without ``--seeds`` a run (any ``--seed``)
stays in ``<run dir>`` as before.

For tables and plots, :func:`aggregate_seeds` merges the runs of one folder into one results
dict whose points are the **mean over seeds** of every knob that every seed has, with the
standard deviation (``accuracy_std``, sample std, ``ddof=1``), the seeds and the per-seed
accuracies kept as extra point fields. A folder with one seed is returned unchanged.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from balf.errors import BALFError
from balf_paper.experiments.sweep.points import finite, read_points
from balf_paper.experiments.sweep.store import read_results_file

__all__ = [
    "SEED_PREFIX",
    "aggregate_seeds",
    "load_seed_runs",
    "mean_std_text",
    "run_dir_of",
    "seed_dir",
    "seeds_of",
    "with_seeds",
]

SEED_PREFIX = "seed"
_MEANED = ("accuracy", "loss", "flops_ratio", "params_ratio", "corrupted_accuracy")


def seeds_of(args: argparse.Namespace) -> list[int]:
    """The seeds to run: ``--seeds`` when given (duplicates refused), else ``[--seed]``."""
    seeds = getattr(args, "seeds", None)
    if not seeds:
        return [int(args.seed)]
    if len(set(seeds)) != len(seeds):
        raise BALFError(f"--seeds lists a seed twice: {seeds}")
    return [int(s) for s in seeds]


def seed_dir(run_dir: str | Path, seed: int) -> Path:
    """The folder of one seed's run: ``run_dir`` for seed 0, ``run_dir/seed<k>`` otherwise."""
    return Path(run_dir) if seed == 0 else Path(run_dir) / f"{SEED_PREFIX}{seed}"


def run_dir_of(args: argparse.Namespace, run_dir: str | Path, seed: int) -> Path:
    """Where a sweep of ``seed`` is stored: :func:`seed_dir` under ``--seeds``; without it
    (one ``--seed``) the run folder itself, as before seeds existed."""
    return seed_dir(run_dir, seed) if getattr(args, "seeds", None) else Path(run_dir)


def load_seed_runs(run_dir: str | Path) -> dict[int, dict[str, Any]]:
    """``{seed: results}`` of ``run_dir/results.json`` (its config's seed) and ``seed<k>/``."""
    run_dir = Path(run_dir)
    runs: dict[int, dict[str, Any]] = {}
    top = run_dir / "results.json"
    if top.is_file():
        results = read_results_file(top)
        if results is not None:
            runs[int(results.get("config", {}).get("seed", 0))] = results
    if run_dir.is_dir():
        for sub in sorted(run_dir.iterdir()):
            suffix = sub.name[len(SEED_PREFIX) :] if sub.name.startswith(SEED_PREFIX) else ""
            path = sub / "results.json"
            if suffix.isdigit() and path.is_file():
                results = read_results_file(path)
                if results is not None:
                    runs[int(suffix)] = results
    return dict(sorted(runs.items()))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate_seeds(runs: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """One results dict of mean points over the seeds' runs (the run itself for one seed).

    Only knobs present (with a finite accuracy) in every run are kept, so each point is a mean
    over the same seeds. Point fields: the means of accuracy, loss, the FLOPs/params ratios
    (and ``corrupted_accuracy`` where stored), plus ``accuracy_std``, ``seeds`` and
    ``accuracy_per_seed``; ``config`` is the first seed's with ``seeds`` added.
    """
    if not runs:
        raise BALFError("no runs to aggregate")
    if len(runs) == 1:
        return dict(next(iter(runs.values())))
    seeds = list(runs)
    by_seed = []
    for results in runs.values():
        pts = {p.key: p for p in read_points(results) if finite(p.accuracy) is not None}
        by_seed.append(pts)
    first = runs[seeds[0]]
    order = [p.key for p in read_points(first)]
    common = [k for k in order if all(k in pts for pts in by_seed)]
    points = []
    for key in common:
        group = [pts[key] for pts in by_seed]
        point: dict[str, Any] = {"knob": group[0].knob}
        for name in _MEANED:
            values = [finite(getattr(p, name)) for p in group]
            if all(v is not None for v in values):
                point[name] = _mean_std(values)[0]
            elif name in ("accuracy", "loss", "flops_ratio", "params_ratio"):
                point[name] = None
        point["accuracy_std"] = _mean_std([p.accuracy for p in group])[1]
        point["seeds"] = seeds
        point["accuracy_per_seed"] = [p.accuracy for p in group]
        point["ranks"] = {}
        points.append(point)
    config = {**first.get("config", {}), "seeds": seeds}
    return {"config": config, "points": points, "original": first.get("original")}


def with_seeds(model_dir: str | Path, results_by_mode: Mapping[str, Any]) -> dict[str, Any]:
    """``results_by_mode`` with each mode's runs over seeds merged (:func:`aggregate_seeds`)."""
    out = {}
    for mode, results in results_by_mode.items():
        runs = load_seed_runs(Path(model_dir) / mode)
        out[mode] = aggregate_seeds(runs) if len(runs) > 1 else results
    return out


def mean_std_text(mean: float, std: float | None, digits: int = 2) -> str | float:
    """``"m ± s"`` with ``digits`` decimals, or ``mean`` itself when there is no std."""
    if std is None:
        return mean
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
