"""Every figure and table of a results tree, regenerated from its ``results.json`` files.

``render_all(root)`` walks ``<root>/<dataset>/<model>/`` and, for whatever is there, writes

- ``figures/accuracy_vs_flops.*``, ``figures/accuracy_vs_params.*`` and
  ``tables/matched_flops.{tex,md}``, ``tables/matched_params.{tex,md}`` from the mode sweeps
  (``<mode>/results.json``), with other works' published points overlaid;
- ``figures/calib_size.*`` and ``tables/calib_size.{tex,md}`` from ``calib-size/calib<N>/``;
- ``figures/n_iters.*`` from ``n-iters/iters<N>/``;
- ``figures/corruption.*`` and ``tables/corruption.{tex,md}`` from ``corruption/<mode>/``;
- ``figures/calib_shift.*`` and ``tables/calib_shift{,_groups}.{tex,md}`` from
  ``calib-shift/<set>/<mode>/`` (:mod:`balf_paper.experiments.render.calib_shift`);

a language task's folder (``<root>/language/<task>/<strategy>/<mode>/``) gets its table and
figure (:mod:`balf_paper.experiments.render.language`); and
``<root>/benchmarks/compression_time.{tex,md}`` from ``benchmarks/compression_time.json``; the
single-layer, speed and latency studies' figures and tables beside their JSON
(:func:`balf_paper.experiments.render.studies.render_studies`).
``<root>/quickstart/`` is a results tree of its own (the quickstart's output). Missing inputs
are skipped with a log line; rerunning rewrites byte-identical files. Nothing is recomputed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from balf.errors import BALFError
from balf_paper.experiments.render.calib_shift import render_calib_shift
from balf_paper.experiments.render.labels import dataset_label
from balf_paper.experiments.render.language import render_language
from balf_paper.experiments.render.plots import (
    plot_accuracy_vs_ratio,
    plot_calibration_size,
    plot_corruption,
    plot_n_iters,
)
from balf_paper.experiments.render.studies import render_studies
from balf_paper.experiments.render.tables import (
    DEFAULT_TARGETS,
    calibration_size_table,
    compression_time_table,
    corruption_table,
    load_benchmark_rows,
    load_mode_results,
    load_numbered_runs,
    matched_reduction_table,
    original_point,
    points_table,
    write_table,
)
from balf_paper.experiments.sweep.seeds import with_seeds
from balf_paper.experiments.sweep.store import read_json_file
from balf_paper.experiments.tasks.image.task import IMAGE_CLASSIFICATION

__all__ = ["render_all", "render_benchmark", "render_model"]

log = logging.getLogger(__name__)

QUANTITY_NAMES = {"flops": "FLOPs", "params": "parameter"}
#: Folders under a results root that are results roots themselves (``seeds-calib500``: the
#: seed study of the ImageNet samples, 500 of the 1,000 calibration images per seed).
NESTED_ROOTS = ("quickstart", "seeds-calib500")
#: Folders under a results root that hold no ``<model>/`` sweeps.
NOT_DATASETS = ("benchmarks", "svd_vs_actaware")
#: Keep-ratios of the matched-reduction tables of compact networks, used instead of the default
#: targets (0.9 ... 0.3): the paper's MobileNetV2 table (these networks lose far more per cut).
COMPACT_MODEL_TARGETS: tuple[float, ...] = (0.97, 0.9, 0.8, 0.75, 0.7)
COMPACT_MODELS = ("mobilenet_v2", "mobilenet_v2_q8", "efficientnet_lite0")


@dataclass(frozen=True)
class _Section:
    """One per-model experiment folder: how to load it, plot it and (optionally) tabulate it."""

    name: str  # for log lines
    load: Callable[[Path], dict]  # model folder -> runs ({} when absent)
    plot: Callable[..., list[Path]]
    stem: str  # figures/<stem>.*, tables/<stem>.{tex,md}
    title: str
    table: Callable[[dict], pd.DataFrame] | None = None
    caption: str = ""


SECTIONS = (
    _Section(
        "calibration-size",
        lambda d: load_numbered_runs(d / "calib-size", "calib"),
        plot_calibration_size,
        "calib_size",
        "calibration-set size",
        calibration_size_table,
        "top-1 accuracy (%) by calibration-set size and keep-ratio.",
    ),
    _Section(
        "allocator-iterations",
        lambda d: load_numbered_runs(d / "n-iters", "iters"),
        plot_n_iters,
        "n_iters",
        "allocator iterations",
    ),
    _Section(
        "corruption",
        lambda d: load_mode_results(d / "corruption"),
        plot_corruption,
        "corruption",
        "accuracy under corruption",
        corruption_table,
        "top-1 accuracy (%) per corruption, mean over severities, "
        "of the original and the compressed models (mode, keep-ratio).",
    ),
)


def _guarded(what: str, fn, *a: Any, **kw: Any) -> list[Path]:
    """Run one renderer; a result set it cannot draw is logged and skipped."""
    try:
        return fn(*a, **kw)
    except BALFError as exc:
        log.warning("skipped %s: %s", what, exc)
        return []


def render_model(
    model_dir: Path,
    dataset: str,
    model: str,
    *,
    modes: Sequence[str] | None = None,
    formats: Sequence[str] = ("pdf", "png"),
    targets: Sequence[float] = DEFAULT_TARGETS,
    other_works: pd.DataFrame | None = None,
) -> list[Path]:
    """Every figure and table of one ``results/<dataset>/<model>`` folder; the written files."""
    figures, tables = model_dir / "figures", model_dir / "tables"
    name = f"{dataset}/{model}"
    label = dataset_label(dataset)
    written: list[Path] = []

    sweeps = with_seeds(model_dir, load_mode_results(model_dir, modes))  # mean ± std over seeds
    if sweeps:
        base = next((b for b in map(original_point, sweeps.values()) if b), None)
        base_text = f" Original: {100 * base.accuracy:.2f}%." if base else ""
        for q in ("flops", "params"):
            written += _guarded(
                f"{name} accuracy vs {q}",
                plot_accuracy_vs_ratio,
                sweeps,
                q,
                figures / f"accuracy_vs_{q}",
                dataset=dataset,
                model=model,
                other_works=other_works,
                formats=formats,
            )
            caption = (
                f"{model} on {label}: top-1 accuracy drop (pp, positive = loss) at "
                f"{QUANTITY_NAMES[q]} keep-ratio ≤ target; per mode the most accurate point "
                f"at or below the target, – where none.{base_text}"
            )
            table = matched_reduction_table(sweeps, q, targets)
            written += write_table(
                table, tables / f"matched_{q}", caption, f"tab:{dataset}-{model}-matched-{q}"
            )
        caption = f"{model} on {label}: every compressed point.{base_text}"
        written += write_table(
            points_table(sweeps), tables / "points", caption, f"tab:{dataset}-{model}-points"
        )
    else:
        log.info("%s: accuracy figures and tables skipped (optional: no mode sweep here)", name)

    written += render_calib_shift(model_dir, dataset, model, formats)
    for section in SECTIONS:
        runs = section.load(model_dir)
        if not runs:
            log.info("%s: %s figure skipped (optional: no such sweep here)", name, section.name)
            continue
        written += _guarded(
            f"{name} {section.name}",
            section.plot,
            runs,
            figures / section.stem,
            title=f"{label} / {model}: {section.title}",
            formats=formats,
        )
        if section.table is not None:
            written += write_table(
                section.table(runs),
                tables / section.stem,
                f"{model} on {label}: {section.caption}",
                f"tab:{dataset}-{model}-{section.stem.replace('_', '-')}",
            )
    return written


def render_benchmark(root: Path, dataset: str | None = None) -> list[Path]:
    """``benchmarks/compression_time.{tex,md}`` from the benchmark JSON, if it exists
    (``dataset``: the benchmark of one dataset's folder, named in the caption)."""
    path = root / "benchmarks" / "compression_time.json"
    rows = load_benchmark_rows(path) if path.is_file() else []
    if not rows:
        log.info("compression-time table skipped (optional: %s not present)", path)
        return []
    caption = "Compression time per phase (s) and peak memory per model"
    if dataset is not None:
        caption += f" on {dataset_label(dataset)}"
    settings = {(str(r.get("mode")), str(r.get("ratio", r.get("knob")))) for r in rows}
    if len(settings) == 1 and "None" not in next(iter(settings)):
        mode, ratio = next(iter(settings))
        caption += f", {mode} at keep-ratio {ratio}"
    if any(r.get("synthetic") for r in rows):
        caption += " (rows marked synthetic in the JSON: random weights and images)"
    caption += "."
    table = compression_time_table(rows)
    label = "tab:compression-time" + (f"-{dataset}" if dataset else "")
    return write_table(table, path.with_name("compression_time"), caption, label)


def _subdirs(folder: Path, wanted: Sequence[str] | None) -> list[Path]:
    dirs = sorted(d for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []
    if wanted is not None:
        missing = set(wanted) - {d.name for d in dirs}
        for name in sorted(missing):
            log.warning("%s/%s not found", folder, name)
        dirs = [d for d in dirs if d.name in wanted]
    return dirs


def _has_results(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds any sweep results (``checkpoints/`` etc. do not)."""
    return (
        any(model_dir.glob("*/results.json"))
        or any(model_dir.glob("*/*/results.json"))
        or any(model_dir.glob("calib-shift/*/*/results.json"))
    )


def _task_of(model_dir: Path) -> str:
    """The task kind of the sweeps in ``model_dir`` (their configs'; older files: images)."""
    for pattern in ("*/results.json", "*/*/results.json"):
        for path in sorted(model_dir.glob(pattern)):
            results = read_json_file(path)
            if isinstance(results, dict) and isinstance(results.get("config"), dict):
                return str(results["config"].get("task", IMAGE_CLASSIFICATION))
    return IMAGE_CLASSIFICATION


def render_all(
    root: Path,
    *,
    datasets: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    modes: Sequence[str] | None = None,
    formats: Sequence[str] = ("pdf", "png"),
    targets: Sequence[float] = DEFAULT_TARGETS,
    other_works: pd.DataFrame | None = None,
) -> list[Path]:
    """Render everything under ``root`` (and under ``root/quickstart``); return the written files.

    ``root`` holds ``<dataset>/<model>/`` folders; ``benchmarks/`` is rendered by
    :func:`render_benchmark` and, with ``svd_vs_actaware/``, by :func:`render_studies`; folders
    named in :data:`NESTED_ROOTS` are results roots of their own.
    """
    root = Path(root)
    if not root.is_dir():
        raise BALFError(f"results folder {root} does not exist")
    options = dict(modes=modes, formats=formats, targets=targets)
    written: list[Path] = []
    for dataset_dir in _subdirs(root, datasets):
        if dataset_dir.name in NESTED_ROOTS:
            written += render_all(dataset_dir, models=models, **options)
            continue
        if dataset_dir.name in NOT_DATASETS:
            continue
        written += render_benchmark(dataset_dir, dataset_dir.name)
        for model_dir in _subdirs(dataset_dir, models):
            if not _has_results(model_dir):
                log.info("%s: no results to render", model_dir)
                continue
            if _task_of(model_dir) != IMAGE_CLASSIFICATION:  # swept per calibration strategy
                files = render_language(model_dir)
                log.info("%s: %d files", model_dir, len(files))
                written += files
                continue
            model_options = dict(options)
            if model_dir.name in COMPACT_MODELS and tuple(targets) == DEFAULT_TARGETS:
                model_options["targets"] = COMPACT_MODEL_TARGETS
            files = render_model(
                model_dir,
                dataset_dir.name,
                model_dir.name,
                other_works=other_works,
                **model_options,
            )
            log.info("%s: %d files", model_dir, len(files))
            written += files
    written += render_benchmark(root)
    written += render_studies(root)
    log.info("wrote %d files under %s", len(written), root)
    return written
