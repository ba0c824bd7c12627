"""Convert a language study stored by the former ``scripts/language/lm_sweep.py`` into run folders
of the one sweep runner. Nothing is recomputed; every stored number is kept.

The former layout of ``<out>`` (e.g. ``results/language/wikitext``): ``baseline.json`` (the
uncompressed model's score), ``points/<strategy>/<mode>/<ratio>.json`` (one point each),
``config.json``, ``environment.json`` and ``command.txt`` of the last invocation. The new one:
``<out>/<strategy>/<mode>/{results,config,environment}.json`` and ``command.txt``, each
``results.json`` in format 2 (:mod:`balf_paper.experiments.sweep.points`) with the sweep config
the ``language`` experiment builds from the same options (so a rerun resumes the folders).

Per point: ``ratio`` becomes the knob; the metric (``perplexity`` / ``spearman``, equal to the
stored ``metric_value``) goes into ``metrics``; ``model_flops_ratio``/``model_params_ratio``
become the whole-model ``flops_ratio``/``params_ratio``; ``config`` becomes ``method`` (an
energy point's ``threshold`` is its ``method["threshold"]``); ``seconds_compress`` and
``seconds_evaluate`` become ``compress_seconds`` and ``eval_seconds``; ``layer_*_ratio``,
``ranks``, ``timings`` and ``same_ranks_as`` stay; ``task``, ``strategy``, ``mode``,
``provenance`` and ``data`` move into the sweep config (checked equal across points); a point
with ``skipped`` becomes a skipped knob. A key the converter does not know stops it.

Usage: ``python -m balf_paper.experiments.cli.migrate results/language/wikitext [--delete-old]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from balf.errors import BALFError
from balf.io.atomic import atomic_json_dump, atomic_write_text
from balf_paper.experiments.cli.language import build_parser, language_configs
from balf_paper.experiments.cli.options import run_script
from balf_paper.experiments.sweep.points import FORMAT, ORIGINAL, ResultPoint
from balf_paper.experiments.tasks.base import task_kind
from balf_paper.experiments.tasks.language.task import KINDS

__all__ = ["OLD_FILES", "convert_point", "main", "migrate_language"]

OLD_FILES = ("baseline.json", "config.json", "environment.json", "command.txt")
_MOVED_TO_CONFIG = ("task", "strategy", "mode", "provenance", "data")
_RENAMED = {
    "model_flops_ratio": "flops_ratio",
    "model_params_ratio": "params_ratio",
    "layer_flops_ratio": "layer_flops_ratio",
    "layer_params_ratio": "layer_params_ratio",
    "config": "method",
    "ranks": "ranks",
    "timings": "timings",
    "seconds_compress": "compress_seconds",
    "seconds_evaluate": "eval_seconds",
    "same_ranks_as": "same_ranks_as",
    "objective": "objective",
}


def convert_point(old: dict[str, Any], metric: str, where: Path) -> dict[str, Any]:
    """A former point (without its ``skipped`` case) as a format-2 point (module docstring)."""
    known = {"ratio", "metric_value", "threshold", metric, *_MOVED_TO_CONFIG, *_RENAMED}
    unknown = sorted(set(old) - known)
    if unknown:
        raise BALFError(f"{where}: unknown key(s) {unknown}; not converted")
    if "metric_value" in old and old["metric_value"] != old.get(metric):
        raise BALFError(f"{where}: metric_value {old['metric_value']} != {metric}")
    if "threshold" in old and old["threshold"] != old.get("config", {}).get("threshold"):
        raise BALFError(f"{where}: threshold differs from the config's")
    point: dict[str, Any] = {"knob": old["ratio"], "metrics": {metric: old.get(metric)}}
    point |= {"flops_ratio": old.get("model_flops_ratio")}
    point |= {"params_ratio": old.get("model_params_ratio")}
    for key, new in _RENAMED.items():
        if key in old and new not in point:
            point[new] = old[key]
    ResultPoint.from_dict(point, where)  # a valid point
    return point


def _old_args(out: Path, task: str) -> argparse.Namespace:
    """The options of the former run (its ``config.json`` over the parser's defaults)."""
    args = build_parser().parse_args([])
    stored = json.loads((out / "config.json").read_text())
    for key, value in stored.items():
        if hasattr(args, key):
            setattr(args, key, value)
    args.task = task
    args.method_options = None
    return args


def migrate_language(out: str | Path, delete_old: bool = False) -> list[Path]:
    """Convert the former layout in ``out`` (module docstring); the run folders written.

    Raises:
        BALFError: ``out`` holds no former layout, or a point cannot be converted.
    """
    out = Path(out)
    files = sorted((out / "points").glob("*/*/*.json"))
    if not files or not (out / "baseline.json").is_file():
        raise BALFError(f"{out} holds no points/<strategy>/<mode>/<ratio>.json and baseline.json")
    baseline = json.loads((out / "baseline.json").read_text())
    task = baseline["task"]
    metric = task_kind(KINDS[task]).metric
    old = [(path, json.loads(path.read_text())) for path in files]
    for path, point in old:
        for key in ("task", "provenance", "data"):
            if point.get(key) != baseline.get(key):
                raise BALFError(f"{path}: {key} differs from baseline.json's")
    args = _old_args(out, task)
    args.strategies = sorted({p["strategy"] for _, p in old}, key=["whole", "block"].index)
    args.modes = list(dict.fromkeys(p["mode"] for _, p in old))
    original = {
        "knob": ORIGINAL, "metrics": {metric.name: baseline[metric.name]}, "flops_ratio": 1.0,
        "params_ratio": 1.0, "params": baseline["params"], "ranks": {},
        "eval_seconds": baseline["seconds"],
    }  # fmt: skip
    environment = json.loads((out / "environment.json").read_text())
    command = (out / "command.txt").read_text()
    written = []
    for strategy, mode, config in language_configs(args, baseline["data"]):
        group = [(path, p) for path, p in old if (p["strategy"], p["mode"]) == (strategy, mode)]
        if not group:
            continue
        group.sort(key=lambda item: -item[1]["ratio"])
        config = dataclasses.replace(config, knobs=[float(p["ratio"]) for _, p in group])
        points = [convert_point(p, metric.name, path) for path, p in group if "skipped" not in p]
        skipped = [{"knob": p["ratio"], "reason": p["skipped"]} for _, p in group if "skipped" in p]
        results = {
            "format": FORMAT, "config": dataclasses.asdict(config), "metric": metric.to_dict(),
            "environment": environment, "points": [original, *points],
            "original": {"flops": None, "params": baseline["params"]},
        }  # fmt: skip
        if skipped:
            results["skipped"] = skipped
        results["migrated"] = {
            "from": [str(path.relative_to(out)) for path, _ in group] + ["baseline.json"],
            "converter": "balf_paper.experiments.cli.migrate",
            "environment, command": "of the last lm_sweep.py invocation over the folder",
        }
        run = out / strategy / mode
        run.mkdir(parents=True, exist_ok=True)
        atomic_json_dump(results, run / "results.json")
        atomic_json_dump(dataclasses.asdict(config), run / "config.json")
        atomic_json_dump(environment, run / "environment.json")
        atomic_write_text(command, run / "command.txt")
        written.append(run)
    if delete_old:
        shutil.rmtree(out / "points")
        for name in OLD_FILES:
            (out / name).unlink(missing_ok=True)
    return written


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """``python -m balf_paper.experiments.cli.migrate FOLDER... [--delete-old]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="task folders, e.g. results/language/wikitext")
    parser.add_argument("--delete-old", action="store_true", help="remove the former files")
    args = parser.parse_args(argv)
    written = []
    for folder in args.folders:
        written += migrate_language(folder, args.delete_old)
    for run in written:
        print(run)
    return written


if __name__ == "__main__":
    run_script(main)
