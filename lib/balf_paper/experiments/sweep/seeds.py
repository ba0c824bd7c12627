"""Several calibration seeds per sweep: where each seed's run lives, and mean ± std over seeds.

``--seeds 0 1 2`` runs a sweep once per seed; the seed picks the calibration subset (the
evaluation subset, when ``--eval-size`` asks for one, stays that of ``--seed``, so every seed is
scored on the same images). Seed ``0`` keeps the run folder of a single-seed run
(``<run dir>/results.json``, so an existing seed-0 sweep is resumed, not recomputed); every other
seed ``k`` has ``<run dir>/seed<k>/results.json``. Without ``--seeds`` a run (any ``--seed``)
stays in ``<run dir>`` as before.

For tables and plots, :func:`aggregate_seeds` merges the runs of one folder into one results
dict whose points are the **mean over seeds** of every knob that every seed has, with the
standard deviation of every metric (``metric_std``, sample std, ``ddof=1``), the seeds and the
per-seed values. A folder with one seed is returned unchanged.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from balf.errors import BALFError
from balf_paper.experiments.sweep.points import ResultPoint, finite, read_points
from balf_paper.experiments.sweep.store import metric_of, read_results_file

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


def _mean_point(group: Sequence[ResultPoint], seeds: list[int]) -> dict[str, Any]:
    """The mean point of one knob over the seeds' points (format 2, with the stds)."""
    names = [n for n in group[0].metrics if all(finite(p.metric(n)) is not None for p in group)]
    per = {n: [float(p.metric(n)) for p in group] for n in names}
    ratios = {}
    for name in ("flops_ratio", "params_ratio"):
        values = [finite(getattr(p, name)) for p in group]
        ratios[name] = _mean_std(values)[0] if all(v is not None for v in values) else None
    return {
        "knob": group[0].knob,
        "metrics": {n: _mean_std(v)[0] for n, v in per.items()},
        **ratios,
        "ranks": {},
        "seeds": seeds,
        "metric_std": {n: _mean_std(v)[1] for n, v in per.items()},
        "metric_per_seed": per,
    }


def aggregate_seeds(
    runs: Mapping[int, Mapping[str, Any]], metric: str | None = None
) -> dict[str, Any]:
    """One results dict of mean points over the seeds' runs (the run itself for one seed).

    Only knobs present with a finite ``metric`` (default: the runs' task metric,
    :func:`~balf_paper.experiments.sweep.store.metric_of`) in every run are kept, so each point
    is a mean over the same seeds. Points: the means of every metric all seeds have and of the
    FLOPs/params ratios, with ``metric_std`` (sample std, ``ddof=1``), ``metric_per_seed`` and
    ``seeds``; ``config`` is the first seed's with ``seeds`` added.
    """
    if not runs:
        raise BALFError("no runs to aggregate")
    if len(runs) == 1:
        return dict(next(iter(runs.values())))
    seeds = list(runs)
    first = runs[seeds[0]]
    metric = metric or metric_of(first).name
    by_seed = []
    for results in runs.values():
        points = read_points(results)
        by_seed.append({p.key: p for p in points if finite(p.metric(metric)) is not None})
    order = [p.key for p in read_points(first)]
    common = [k for k in order if all(k in pts for pts in by_seed)]
    points = [_mean_point([pts[key] for pts in by_seed], seeds) for key in common]
    config = {**first.get("config", {}), "seeds": seeds}
    out = {"config": config, "points": points, "original": first.get("original")}
    return out | ({"metric": first["metric"]} if "metric" in first else {})


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
