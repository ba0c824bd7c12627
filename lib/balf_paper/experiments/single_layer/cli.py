"""The command line of the single-layer study (``scripts/compare_svd_vs_actaware.py``).

For a Linear, a Conv2d and a grouped Conv2d layer (:mod:`.cases`) the errors of plain SVD and
of activation-aware factors are measured at every kept-rank ratio (:mod:`.curves`).
``balf.compress`` itself is not called because it keeps a layer dense wherever the low-rank form
is not strictly cheaper, which would hide the upper half of every curve.

Outputs in ``--out-dir`` (default ``results/svd_vs_actaware``): ``svd_vs_actaware_<source>.json``
(``{"source", "command", "environment", "config", "layers": [{"panel", "name", "description",
"geometry": {"groups", "in_dim", "out_dim", "max_rank"}, "calibration_rows", "heldout_rows",
"points": [{"ratio", "rank", "rank_fraction", "bound", "svd": {"calibration", "heldout"},
"act_aware": {"calibration", "heldout"}}]}]}``) and ``.pdf``/``.png``, a figure with three panels
rendered from the JSON (:func:`.plot.plot_curves`; ``--plot-only`` re-renders it). This is a
command-line entry point: its report goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from balf.io.atomic import atomic_json_dump
from balf_paper.experiments.cli.options import parse_with_yaml
from balf_paper.experiments.environment import command_line, environment_info
from balf_paper.experiments.single_layer.cases import CASE_SOURCES
from balf_paper.experiments.single_layer.curves import curves_table, layer_curves
from balf_paper.experiments.single_layer.plot import plot_curves

__all__ = ["build_parser", "main", "measure"]

log = logging.getLogger("compare_svd_vs_actaware")


def build_parser() -> argparse.ArgumentParser:
    """Options; defaults come from ``configs/compare_svd_vs_actaware.yaml``."""
    p = argparse.ArgumentParser(description="Plain SVD vs activation-aware: single-layer errors.")
    p.add_argument("--source", choices=["synthetic", "checkpoint"], default="synthetic")
    p.add_argument(
        "--ratios", nargs="+", type=float, default=[round(0.05 * i, 2) for i in range(1, 21)]
    )
    p.add_argument("--calib-size", type=int, default=256, help="calibration samples (images)")
    p.add_argument("--heldout-size", type=int, default=256, help="held-out samples (images)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out-dir", default="results/svd_vs_actaware")
    p.add_argument("--plot-only", action="store_true", help="re-render the figure from the JSON")
    g = p.add_argument_group("synthetic layers")
    g.add_argument("--linear-in", type=int, default=256)
    g.add_argument("--linear-out", type=int, default=256)
    g.add_argument("--tokens", type=int, default=16, help="input vectors per Linear sample")
    g.add_argument("--conv-channels", type=int, default=64)
    g.add_argument("--grouped-channels", type=int, default=128)
    g.add_argument("--groups", type=int, default=8, help="groups of the grouped conv")
    g.add_argument("--spatial", type=int, default=16, help="side of the synthetic feature maps")
    g.add_argument("--decay", type=float, default=1.0, help="input spectrum σ_i ∝ i^-decay")
    c = p.add_argument_group("checkpoint layers")
    c.add_argument("--dataset", default="fashion-mnist")
    c.add_argument("--model", default="resnet20")
    c.add_argument("--checkpoint", default=None, help="weights (default: the repo's checkpoint)")
    c.add_argument(
        "--data-root",
        default=None,
        help="dataset folder (default: datasets/ for cifar10, the standard search path for "
        "fashion-mnist)",
    )
    c.add_argument("--linear-layer", default="fc")
    c.add_argument("--conv-layer", default="layer2.1.conv1")
    c.add_argument("--grouped-layer", default="layer3.1.conv1")
    return p


def measure(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Both factorizations of the three layers of ``args.source``: the study's JSON."""
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    layers = []
    for case in CASE_SOURCES[args.source](args):
        case.layer = case.layer.to(device=args.device, dtype=dtype)
        case.calibration = case.calibration.to(dtype)
        case.heldout = case.heldout.to(dtype)
        log.info("%s: %s", case.panel, case.description)
        layers.append(layer_curves(case, args.ratios, args.batch_size))
    return {
        "source": args.source,
        "command": command_line(argv),
        "environment": environment_info(args.device),
        "config": vars(args),
        "layers": layers,
    }


def main(argv: list[str] | None = None) -> None:
    """Measure both factorizations on the three layers and write JSON + figure."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_with_yaml(build_parser(), argv, "compare_svd_vs_actaware.yaml")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stem = Path(args.out_dir) / f"svd_vs_actaware_{args.source}"
    json_path = stem.with_suffix(".json")
    if args.plot_only:
        results = json.loads(json_path.read_text())
    else:
        results = measure(args, argv)
        atomic_json_dump(results, json_path)
        for layer in results["layers"]:
            print(curves_table(layer))
    paths = plot_curves(results, stem)
    print(f"\nwritten: {json_path}, {', '.join(map(str, paths))}")
