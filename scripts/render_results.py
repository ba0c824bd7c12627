"""Regenerate every figure and table from the stored results (nothing is recomputed).

Walks ``<results-root>/<dataset>/<model>/`` and, for whatever is there, writes

- ``figures/accuracy_vs_flops.*``, ``figures/accuracy_vs_params.*`` and
  ``tables/matched_flops.{tex,md}``, ``tables/matched_params.{tex,md}`` from the mode sweeps
  (``<mode>/results.json``), with other works' published points overlaid;
- ``figures/calib_size.*`` and ``tables/calib_size.{tex,md}`` from ``calib-size/calib<N>/``;
- ``figures/n_iters.*`` from ``n-iters/iters<N>/``;
- ``figures/corruption.*`` and ``tables/corruption.{tex,md}`` from ``corruption/<mode>/``;

and ``<results-root>/benchmarks/compression_time.{tex,md}`` from
``benchmarks/compression_time.json``. Missing inputs are skipped with a log line. Rerunning
overwrites the outputs with identical files. Defaults come from ``configs/render_results.yaml``.

Example: ``python scripts/render_results.py --datasets cifar10 --formats png``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from balf.errors import BALFError
from balf.experiments.cli import parse_with_yaml
from balf.experiments.plots import (
    load_other_works,
    plot_accuracy_vs_ratio,
    plot_calibration_size,
    plot_corruption,
    plot_n_iters,
)
from balf.experiments.tables import (
    DEFAULT_TARGETS,
    calibration_size_table,
    compression_time_table,
    corruption_table,
    load_benchmark_rows,
    load_mode_results,
    load_numbered_runs,
    matched_reduction_table,
    original_point,
    write_table,
)

log = logging.getLogger("render_results")

REPO_ROOT = Path(__file__).resolve().parents[1]
QUANTITY_NAMES = {"flops": "FLOPs", "params": "parameter"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results-root", default="results", help="results folder (%(default)s)")
    p.add_argument("--datasets", nargs="+", default=None, help="only these datasets (all)")
    p.add_argument("--models", nargs="+", default=None, help="only these models (all)")
    p.add_argument("--modes", nargs="+", default=None, help="only these sweep modes (all found)")
    p.add_argument("--formats", nargs="+", default=["pdf", "png"], choices=["pdf", "png", "svg"])
    p.add_argument(
        "--targets",
        nargs="+",
        type=float,
        default=list(DEFAULT_TARGETS),
        help="keep-ratios of the matched-reduction tables",
    )
    p.add_argument(
        "--other-works",
        default="data/other_works.csv",
        help="other works' published points; 'none' to leave them out",
    )
    p.add_argument("--log-level", default="INFO")
    return p


def _other_works(path: str) -> pd.DataFrame | None:
    if path.lower() == "none":
        return None
    candidate = Path(path)
    if not candidate.exists() and not candidate.is_absolute():
        candidate = REPO_ROOT / path
    if not candidate.exists():
        log.warning("other works' table %s not found; plots without it", path)
        return None
    return load_other_works(candidate)


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
    args: argparse.Namespace,
    works: pd.DataFrame | None,
) -> list[Path]:
    """Every figure and table of one ``results/<dataset>/<model>`` folder; the written files."""
    figures, tables = model_dir / "figures", model_dir / "tables"
    name = f"{dataset}/{model}"
    written: list[Path] = []

    sweeps = load_mode_results(model_dir, args.modes)
    if sweeps:
        base = next((b for b in map(original_point, sweeps.values()) if b), None)
        base_text = f" Original: {100 * base['accuracy']:.2f}%." if base else ""
        for q in ("flops", "params"):
            written += _guarded(
                f"{name} accuracy vs {q}",
                plot_accuracy_vs_ratio,
                sweeps,
                q,
                figures / f"accuracy_vs_{q}",
                dataset=dataset,
                model=model,
                other_works=works,
                formats=args.formats,
            )
            caption = (
                f"{model} on {dataset}: top-1 accuracy drop (pp, positive = loss) at "
                f"{QUANTITY_NAMES[q]} keep-ratio ≤ target; per mode the most accurate point "
                f"at or below the target, – where none.{base_text}"
            )
            table = matched_reduction_table(sweeps, q, args.targets)
            written += write_table(
                table, tables / f"matched_{q}", caption, f"tab:{dataset}-{model}-matched-{q}"
            )
    else:
        log.info("%s: no mode sweeps", name)

    calib = load_numbered_runs(model_dir / "calib-size", "calib")
    if calib:
        written += _guarded(
            f"{name} calibration size",
            plot_calibration_size,
            calib,
            figures / "calib_size",
            title=f"{dataset} / {model}: calibration-set size",
            formats=args.formats,
        )
        caption = (
            f"{model} on {dataset}: top-1 accuracy (%) by calibration-set size and keep-ratio."
        )
        written += write_table(
            calibration_size_table(calib),
            tables / "calib_size",
            caption,
            f"tab:{dataset}-{model}-calib-size",
        )
    else:
        log.info("%s: no calibration-size sweep", name)

    iters = load_numbered_runs(model_dir / "n-iters", "iters")
    if iters:
        written += _guarded(
            f"{name} allocator iterations",
            plot_n_iters,
            iters,
            figures / "n_iters",
            title=f"{dataset} / {model}: allocator iterations",
            formats=args.formats,
        )
    else:
        log.info("%s: no allocator-iterations sweep", name)

    corrupted = load_mode_results(model_dir / "corruption")
    if corrupted:
        written += _guarded(
            f"{name} corruption",
            plot_corruption,
            corrupted,
            figures / "corruption",
            title=f"{dataset} / {model}: accuracy under corruption",
            formats=args.formats,
        )
        caption = (
            f"{model} on {dataset}: top-1 accuracy (%) per corruption, mean over severities, "
            "of the original and the compressed models (mode, keep-ratio)."
        )
        written += write_table(
            corruption_table(corrupted),
            tables / "corruption",
            caption,
            f"tab:{dataset}-{model}-corruption",
        )
    else:
        log.info("%s: no corruption sweep", name)
    return written


def render_benchmark(root: Path) -> list[Path]:
    """``benchmarks/compression_time.{tex,md}`` from the benchmark JSON, if it exists."""
    path = root / "benchmarks" / "compression_time.json"
    rows = load_benchmark_rows(path) if path.is_file() else []
    if not rows:
        log.info("no compression-time benchmark at %s", path)
        return []
    caption = "Compression time per phase (s) and peak memory per model"
    settings = {(str(r.get("mode")), str(r.get("ratio", r.get("knob")))) for r in rows}
    if len(settings) == 1 and "None" not in next(iter(settings)):
        mode, ratio = next(iter(settings))
        caption += f", {mode} at keep-ratio {ratio}"
    if any(r.get("synthetic") for r in rows):
        caption += " (rows marked synthetic in the JSON: random weights and images)"
    caption += "."
    table = compression_time_table(rows)
    return write_table(table, path.with_name("compression_time"), caption, "tab:compression-time")


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
    return any(model_dir.glob("*/results.json")) or any(model_dir.glob("*/*/results.json"))


def render_all(args: argparse.Namespace) -> list[Path]:
    """Render everything under ``args.results_root``; return the written files."""
    root = Path(args.results_root)
    if not root.is_dir():
        raise BALFError(f"results folder {root} does not exist")
    works = _other_works(args.other_works)
    written: list[Path] = []
    for dataset_dir in _subdirs(root, args.datasets):
        if dataset_dir.name == "benchmarks":
            continue
        for model_dir in _subdirs(dataset_dir, args.models):
            if not _has_results(model_dir):
                log.info("%s: no results to render", model_dir)
                continue
            files = render_model(model_dir, dataset_dir.name, model_dir.name, args, works)
            log.info("%s: %d files", model_dir, len(files))
            written += files
    written += render_benchmark(root)
    log.info("wrote %d files under %s", len(written), root)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """Parse options (defaults from ``configs/render_results.yaml``) and render everything."""
    args = parse_with_yaml(_parser(), argv, "render_results.yaml")
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(message)s")
    render_all(args)


if __name__ == "__main__":
    main()
