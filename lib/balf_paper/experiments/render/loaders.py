"""Read stored results for tables and figures: sweeps by mode, numbered runs, benchmark rows.

Everything here reads the ``results.json`` files the sweep runner writes
(:mod:`balf_paper.experiments.sweep.runner`) and the compression-time benchmark JSON; nothing is
recomputed. Unreadable JSON is skipped with a log line; a results file whose points are not result
points (:class:`~balf_paper.experiments.sweep.points.ResultPoint`) is a :class:`~balf.BALFError`
naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from balf_paper.experiments.layout import SPECIAL_DIRS
from balf_paper.experiments.modes import mode_order
from balf_paper.experiments.sweep.store import read_json_file, read_results_file

__all__ = ["SPECIAL_DIRS", "load_benchmark_rows", "load_mode_results", "load_numbered_runs"]

log = logging.getLogger(__name__)



def _mode_sort_key(mode: str) -> tuple[int, str]:
    order = mode_order()
    return (order.index(mode) if mode in order else len(order), mode)


def load_mode_results(
    model_dir: str | Path, modes: Iterable[str] | None = None
) -> dict[str, dict[str, Any]]:
    """The ``<model_dir>/<mode>/results.json`` files, keyed by mode, in display order.

    Args:
        model_dir: ``results/<dataset>/<model>`` (or ``.../corruption``).
        modes: keep only these modes (default: every folder holding a ``results.json``,
            except :data:`SPECIAL_DIRS`).
    """
    model_dir = Path(model_dir)
    wanted = None if modes is None else set(modes)
    found: dict[str, dict[str, Any]] = {}
    if not model_dir.is_dir():
        return found
    for sub in model_dir.iterdir():
        path = sub / "results.json"
        if sub.name in SPECIAL_DIRS or not path.is_file():
            continue
        if wanted is not None and sub.name not in wanted:
            continue
        results = read_results_file(path)
        if results is not None:
            found[sub.name] = results
    return {m: found[m] for m in sorted(found, key=_mode_sort_key)}


def load_numbered_runs(parent: str | Path, prefix: str) -> dict[int, dict[str, Any]]:
    """``<parent>/<prefix><N>/results.json`` keyed by ``N``, ascending.

    Example: ``load_numbered_runs(model_dir / "calib-size", "calib")`` → ``{256: …, 512: …}``.
    """
    parent = Path(parent)
    runs: dict[int, dict[str, Any]] = {}
    if not parent.is_dir():
        return runs
    for sub in parent.iterdir():
        suffix = sub.name[len(prefix) :] if sub.name.startswith(prefix) else ""
        path = sub / "results.json"
        if not suffix.isdigit() or not path.is_file():
            continue
        results = read_results_file(path)
        if results is not None:
            runs[int(suffix)] = results
    return dict(sorted(runs.items()))


def load_benchmark_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of the compression-time benchmark JSON, whatever its top-level shape.

    Accepted: a list of rows; a mapping with a ``rows``/``results``/``models`` list; or a
    mapping ``{model: row}``. Each row is a mapping with at least ``model``; others are skipped.
    """
    data = read_json_file(Path(path))
    if isinstance(data, dict):
        for key in ("rows", "results", "models"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            data = [{"model": name, **row} for name, row in data.items() if isinstance(row, dict)]
    if not isinstance(data, list):
        return []
    rows = [r for r in data if isinstance(r, dict) and r.get("model") is not None]
    if len(rows) < len(data):
        log.warning("%s: %d rows without a model name skipped", path, len(data) - len(rows))
    return rows
