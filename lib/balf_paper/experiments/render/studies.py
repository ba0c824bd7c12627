"""The single-layer and speed studies' figures and tables, re-rendered from their stored JSON.

:func:`render_studies` finds, under a results root,

- ``svd_vs_actaware/svd_vs_actaware_<source>.json`` -> ``.pdf``/``.png`` beside it
  (:func:`balf_paper.experiments.single_layer.plot_curves`);
- ``benchmarks/speed_<device>.json`` -> ``.pdf``/``.png`` beside it
  (:func:`balf_paper.experiments.benchmarks.speed_plot.plot_speedup`);
- ``benchmarks/**/latency_<device>.json`` (``"benchmark": "latency_budget"``) -> its Markdown
  tables and ``.pdf``/``.png`` beside it
  (:func:`balf_paper.experiments.benchmarks.speed_plot.write_latency_outputs`);

the same files the scripts write (``--plot-only``), always as PDF and PNG. PDFs carry no creation
date, so the committed files are reproduced byte for byte. Nothing is measured.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from balf_paper.experiments.benchmarks.speed_plot import plot_speedup, write_latency_outputs
from balf_paper.experiments.single_layer.plot import plot_curves

__all__ = ["render_studies"]

log = logging.getLogger(__name__)


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _render_latency(path: Path) -> list[Path]:
    results = _load(path)
    if results.get("benchmark") != "latency_budget":
        log.info("%s: not a latency-budget benchmark, skipped", path)
        return []
    device = path.stem.removeprefix("latency_")
    tables, plots = write_latency_outputs(results, path.with_suffix(""), device)
    return [*tables, *plots]


def render_studies(root: Path) -> list[Path]:
    """Re-render every single-layer, speed and latency study under ``root``; the written files."""
    root = Path(root)
    written: list[Path] = []
    for path in sorted((root / "svd_vs_actaware").glob("svd_vs_actaware_*.json")):
        written += plot_curves(_load(path), path.with_suffix(""))
    bench = root / "benchmarks"
    for path in sorted(bench.glob("speed_*.json")):
        written += plot_speedup(_load(path), path.with_suffix(""))
    for path in sorted(bench.rglob("latency_*.json")):
        written += _render_latency(path)
    if written:
        log.info("single-layer and speed studies: %d files", len(written))
    return written
