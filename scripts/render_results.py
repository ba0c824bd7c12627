"""Regenerate every figure and table from the stored results (nothing is recomputed).

Walks ``<results-root>/<dataset>/<model>/`` (and ``<results-root>/quickstart/``) and writes the
figures and tables of whatever is there (see :mod:`balf_paper.experiments.render.tree`): accuracy
vs FLOPs/params plots and matched-ratio tables from the mode sweeps, calibration-size, allocator-
iterations and corruption figures/tables, the language tasks' tables and figures
(``language/<task>/``), ``benchmarks/compression_time.{tex,md}``, and the single-layer
(``svd_vs_actaware/``), speed and latency (``benchmarks/``) figures and tables.
With ``--readme README.md`` the README's quoted tables (``<!-- table: path -->`` blocks) are then
rewritten from the rendered Markdown tables. Defaults come from ``configs/render_results.yaml``.

Example: ``python scripts/render_results.py --datasets cifar10 --formats png``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from balf_paper.experiments.cli.options import parse_with_yaml, run_script
from balf_paper.experiments.render.plots import load_other_works
from balf_paper.experiments.render.readme import sync_readme
from balf_paper.experiments.render.tables import DEFAULT_TARGETS
from balf_paper.experiments.render.tree import render_all

log = logging.getLogger("render_results")

REPO_ROOT = Path(__file__).resolve().parents[1]


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
    p.add_argument(
        "--readme",
        default=None,
        help="README whose quoted tables are refreshed afterwards (paths relative to its folder)",
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


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Parse options (defaults from ``configs/render_results.yaml``) and render everything."""
    args = parse_with_yaml(_parser(), argv, "render_results.yaml")
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(message)s")
    written = render_all(
        Path(args.results_root),
        datasets=args.datasets,
        models=args.models,
        modes=args.modes,
        formats=args.formats,
        targets=args.targets,
        other_works=_other_works(args.other_works),
    )
    if args.readme:
        changed = sync_readme(Path(args.readme))
        log.info("%s: %d quoted tables updated %s", args.readme, len(changed), changed or "")
    return written


if __name__ == "__main__":
    run_script(main)
