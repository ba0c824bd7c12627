"""The ``results.json`` of a sweep run: read, resume (same sweep identity only), add points.

``{"format": 2, "config": …, "metric": {"name": …, "higher_is_better": …}, "environment": …,
"points": [...], "original": {...}, "skipped": [...]}``: ``metric`` is the task's metric (a file
without it is an image-classification run: ``accuracy``, higher is better). A format-1 file (no
``"format"``) is read through the converter of :mod:`~balf_paper.experiments.sweep.points` and,
when a sweep resumes it, rewritten in format 2 (every point converted, nothing dropped).

``{"config": …, "environment": …, "points": [...], "original": {...}, "skipped": [...]}``; points
are :class:`~balf_paper.experiments.sweep.points.ResultPoint` objects as JSON, kept in knob order
(``"original"`` first, then the config's knobs). The file is rewritten atomically on every change
(by the main process only).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from balf.calibration.distributed import is_main_process
from balf.errors import BALFError
from balf.io.atomic import atomic_json_dump
from balf_paper.experiments.sweep.points import (
    FORMAT,
    ResultPoint,
    SkippedPoint,
    knob_key,
    read_points,
)
from balf_paper.experiments.tasks.base import Metric

__all__ = [
    "add_point",
    "add_skipped",
    "done_keys",
    "drop_points",
    "load_results",
    "metric_of",
    "read_json_file",
    "read_results_file",
    "resume",
]

log = logging.getLogger(__name__)


IMAGE_METRIC = Metric("accuracy", higher_is_better=True)
"""The metric of a results file that names none (format 1: image classification)."""


def metric_of(results: Mapping[str, Any]) -> Metric:
    """The task metric a results dict records (:data:`IMAGE_METRIC` when it records none)."""
    stored = results.get("metric")
    if not isinstance(stored, Mapping):
        return IMAGE_METRIC
    return Metric(str(stored["name"]), bool(stored["higher_is_better"]))


def read_json_file(path: Path) -> Any | None:
    """The JSON in ``path``, or ``None`` (logged) when it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("skipping %s: %s", path, exc)
        return None


def read_results_file(path: Path) -> dict[str, Any] | None:
    """A results dict with at least one point (checked to be result points), else ``None``."""
    results = read_json_file(path)
    if not isinstance(results, dict) or not results.get("points"):
        return None
    read_points(results, path)  # BALFError naming the file and the missing field
    return results


def load_results(path: Path) -> dict[str, Any]:
    """Read a ``results.json``."""
    return json.loads(Path(path).read_text())


def resume(path: Path, config: Any, env: dict[str, Any], metric: Metric) -> dict[str, Any]:
    """Existing results for the same sweep identity (in format 2), or a fresh results dict.

    Args:
        config: the :class:`~balf_paper.experiments.sweep.config.SweepConfig` of the run.
        env: the environment record of this process.
        metric: the task's metric.
    """
    head = {"format": FORMAT, "config": asdict(config), "metric": metric.to_dict()}
    if not path.exists():
        return {**head, "environment": env, "points": []}
    try:
        old = load_results(path)
    except json.JSONDecodeError as exc:
        raise BALFError(f"{path} is not valid JSON ({exc}); move it away to restart") from exc
    old_identity = _identity_of(old, path, type(config))
    if old_identity != config.identity():
        raise BALFError(
            f"{path} holds a different sweep ({old_identity}) than requested "
            f"({config.identity()}); use another output folder or delete it"
        )
    log.info("resuming %s: %d points done", path, len(old["points"]))
    points = [ResultPoint.from_dict(p, path).to_dict() for p in old["points"]]  # format 2
    rest = {k: v for k, v in old.items() if k not in ("format", "config", "metric")}
    return {**head, **rest, "environment": env, "points": points}


def _identity_of(old: Any, path: Path, config_class: type) -> dict[str, Any]:
    """The sweep identity of loaded results; a clear error when they are not a results file."""
    fix = "move it away to restart the sweep"

    def bad(what: str) -> BALFError:
        return BALFError(f"{path} is not a balf results file ({what}); {fix}")

    if not isinstance(old, dict):
        raise bad(f"a JSON {type(old).__name__}, not an object")
    for key, kind in (("config", dict), ("points", list)):
        if not isinstance(old.get(key), kind):
            raise bad(f"'{key}' is missing or not a JSON {'object' if kind is dict else 'array'}")
    for field_name in ("points", "skipped"):
        entries = old.get(field_name, [])
        if not isinstance(entries, list) or not all(
            isinstance(p, dict) and "knob" in p for p in entries
        ):
            raise bad(f"every entry of '{field_name}' must be an object with a 'knob'")
    _refuse_repeated_knobs(old, path)
    try:
        return config_class(**{"weights": "", "evaluation": {}, **old["config"]}).identity()
    except (TypeError, ValueError) as exc:
        raise bad(f"its 'config' is not a sweep config: {exc}") from exc


def _refuse_repeated_knobs(old: dict[str, Any], path: Path) -> None:
    """A knob stored twice (a damaged or hand-merged file) would be resumed and kept twice."""
    first: dict[str, str] = {}
    for field_name in ("points", "skipped"):
        for i, entry in enumerate(old.get(field_name, [])):
            try:
                key = knob_key(entry["knob"])
            except (TypeError, ValueError):
                raise BALFError(
                    f"{path}: {field_name}[{i}] has knob {entry['knob']!r}, not a number or "
                    "'original'; move the file away to restart the sweep"
                ) from None
            where = f"{field_name}[{i}]"
            if key in first:
                raise BALFError(
                    f"{path}: {where} repeats knob {entry['knob']!r} of {first[key]} (a damaged "
                    "or merged file); delete one of the two entries, or move the file away to "
                    "restart the sweep"
                )
            first[key] = where


def done_keys(results: dict[str, Any], path: Path) -> set[str]:
    """:func:`~balf_paper.experiments.sweep.points.knob_key` of every point and skipped knob
    stored."""
    done = {ResultPoint.from_dict(p, path).key for p in results["points"]}
    return done | {
        knob_key(SkippedPoint.from_dict(s, path).knob) for s in results.get("skipped", [])
    }


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (nested ones included) as ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def add_point(results: dict[str, Any], point: ResultPoint, path: Path) -> None:
    """Add ``point`` (non-finite numbers stored as ``null``) in knob order; rewrite ``path``."""
    results["points"].append(_json_safe(point.to_dict()))
    order = {knob_key(k): i for i, k in enumerate(["original", *results["config"]["knobs"]])}
    results["points"].sort(key=lambda p: order.get(knob_key(p["knob"]), len(order)))
    _write(results, path)


def drop_points(results: dict[str, Any], keys: set[str]) -> None:
    """Remove the points whose :func:`knob_key` is in ``keys`` (the next write stores it)."""
    results["points"] = [p for p in results["points"] if knob_key(p["knob"]) not in keys]


def add_skipped(results: dict[str, Any], skipped: SkippedPoint, path: Path) -> None:
    """Record a knob whose budget cannot be met; rewrite ``path``."""
    results.setdefault("skipped", []).append(skipped.to_dict())
    _write(results, path)


def _write(results: dict[str, Any], path: Path) -> None:
    if is_main_process():
        atomic_json_dump(results, path)
