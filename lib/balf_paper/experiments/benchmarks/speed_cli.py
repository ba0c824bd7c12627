"""The speed benchmark's command line (``scripts/imagenet/measure_speed.py``).

``--mode flops_auto``/``params_auto`` times the original and compressed models
(:func:`.speed.measure_model`) and writes ``speed_<device>.json`` (rewritten after every model)
and its plot (:func:`.speed_plot.plot_speedup`). ``--mode latency_auto`` measures latency
budgets (see :mod:`balf_paper.experiments.latency`) and writes ``latency_<device>.json``, its
tables and plot (:func:`.speed_plot.write_latency_outputs`). ``--plot-only`` re-renders from the
JSON. This is a command-line entry point: its report goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from balf.io.atomic import atomic_json_dump
from balf_paper.data import make_loader
from balf_paper.experiments.benchmarks.speed import calibration, measure_model
from balf_paper.experiments.benchmarks.speed_plot import (
    plot_speedup,
    summary_table,
    write_latency_outputs,
)
from balf_paper.experiments.cli.options import parse_with_yaml
from balf_paper.experiments.environment import command_line, environment_info
from balf_paper.experiments.latency.measure import LatencySubject
from balf_paper.experiments.latency.sweep import run_latency_budgets
from balf_paper.experiments.tasks.image.data import (
    benchmark_model,
    experiment_data,
    experiment_model,
)
from balf_paper.experiments.tasks.image.evaluation import evaluate

__all__ = ["build_parser", "latency_subject", "main", "run_latency_mode"]


def build_parser() -> argparse.ArgumentParser:
    """Options; defaults come from ``configs/imagenet_measure_speed.yaml``."""
    p = argparse.ArgumentParser(
        description="Latency and throughput of original and BALF-compressed models."
    )
    p.add_argument("--models", nargs="+", default=["resnet50", "vit_b_16"])
    p.add_argument("--ratios", nargs="+", type=float, default=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    p.add_argument(
        "--mode", default="flops_auto", choices=["flops_auto", "params_auto", "latency_auto"]
    )
    p.add_argument(
        "--fold-bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fold BatchNorm into the preceding convs before timing (default: on)",
    )
    g = p.add_argument_group("latency mode (--mode latency_auto)")
    g.add_argument("--rank-multiple", type=int, default=1, help="ranks are multiples of this")
    g.add_argument("--latency-points", type=int, default=12, help="measured ranks per layer")
    g.add_argument("--min-run-time", type=float, default=0.05, help="seconds per layer measurement")
    g.add_argument("--latency-cache", default=None, help="folder of the latency cache")
    g.add_argument(
        "--min-time",
        type=float,
        default=0.0,
        help="time more interleaved rounds (beyond --repeats) until this many seconds are spent",
    )
    g.add_argument(
        "--latency-iterations",
        type=int,
        default=4,
        help="compressions at most per latency budget (balf.compress_to_latency; 1: open loop)",
    )
    g.add_argument(
        "--latency-tolerance",
        type=float,
        default=0.02,
        help="stop the loop within this fraction of the requested latency ratio",
    )
    g.add_argument("--loop-rounds", type=int, default=5, help="timing rounds per loop step")
    g.add_argument(
        "--loop-min-time", type=float, default=1.0, help="seconds of timing per loop step"
    )
    g.add_argument(
        "--eval-size", type=int, default=None, help="fashion-mnist:* models: test subset size"
    )
    g.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--n-iters", type=int, default=300, help="allocator iterations")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--warmup", type=int, default=5, help="untimed calls before timing")
    p.add_argument("--repeats", type=int, default=20, help="timed calls (median reported)")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="random weights and images (fashion-mnist:*: the trained model, random images)",
    )
    p.add_argument("--calib-size", type=int, default=8192, help="calibration images")
    p.add_argument("--calib-batch-size", type=int, default=64, help="calibration batch size")
    p.add_argument("--image-size", type=int, default=224, help="synthetic image side")
    p.add_argument("--data-root", default="datasets", help="folder holding imagenet-calib/")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (real mode)")
    p.add_argument("--cache-root", default=".", help="folder of activation-cache/ (real mode)")
    p.add_argument("--no-cache", action="store_true", help="do not cache statistics")
    p.add_argument("--channels-last", action="store_true", help="channels-last CNNs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out-dir", default="results/benchmarks")
    p.add_argument("--plot-only", action="store_true", help="re-render the plot from the JSON")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def latency_subject(args: argparse.Namespace, name: str) -> LatencySubject:
    """A synthetic ImageNet model, or a trained ``fashion-mnist:<arch>`` with its test set (with
    ``--synthetic``: random calibration images and no accuracy, where the data is missing)."""
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if name.startswith("fashion-mnist:"):
        arch = name.split(":", 1)[1]
        model, _ = experiment_model("fashion-mnist", arch)
        if args.synthetic:  # the trained model, random calibration images, no accuracy
            g = torch.Generator().manual_seed(args.seed)
            calib = torch.randn(args.calib_size, 1, 28, 28, generator=g)
            return LatencySubject(name, model.to(device), calib, calib[:1].to(device))
        data = experiment_data(
            "fashion-mnist", args.data_root, arch, args.calib_size, args.seed, args.eval_size
        )
        loader = make_loader(data.evaluation, args.eval_batch_size, 0)

        def accuracy(m: nn.Module) -> float:
            return evaluate(m, loader, device, progress=False).accuracy

        calib = make_loader(data.calibration, args.calib_batch_size, 0)
        example = data.evaluation[0][0].unsqueeze(0)
        return LatencySubject(
            name, model.to(device), calib, example.to(device), accuracy
        )
    model = benchmark_model(name, args.synthetic, args.image_size).to(device)
    data, _ = calibration(args, name)
    size = args.image_size if args.synthetic else 224
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(args.seed))
    return LatencySubject(name, model, data, example.to(device))


def _results(benchmark: str, args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """The JSON header of a run (rows still empty); sets ``--threads``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    return {
        "benchmark": benchmark,
        "command": command_line(argv),
        "environment": environment_info(device),
        "config": vars(args),
        "rows": [],
    }


def _measure_latency(args: argparse.Namespace, argv: list[str], json_path: Path) -> dict:
    """Latency budgets of every model; the JSON (rewritten after every model)."""
    results = _results("latency_budget", args, argv)
    for name in args.models:
        results["rows"] += run_latency_budgets(
            latency_subject(args, name),
            args.ratios,
            args.batch_sizes,
            warmup=args.warmup,
            repeats=args.repeats,
            rank_multiple=args.rank_multiple,
            points=args.latency_points,
            min_run_time=args.min_run_time,
            cache_dir=args.latency_cache,
            min_time=args.min_time,
            progress=not args.no_progress,
            latency_iterations=args.latency_iterations,
            latency_tolerance=args.latency_tolerance,
            loop_rounds=args.loop_rounds,
            loop_min_time=args.loop_min_time,
        )
        atomic_json_dump(results, json_path)
    return results


def run_latency_mode(args: argparse.Namespace, argv: list[str], device: torch.device) -> None:
    """Measure latency budgets for every model; write JSON, Markdown tables and the plot."""
    stem = Path(args.out_dir) / f"latency_{device.type}"
    json_path = stem.with_suffix(".json")
    if args.plot_only:
        results = json.loads(json_path.read_text())
    else:
        results = _measure_latency(args, argv, json_path)
    tables, paths = write_latency_outputs(results, stem, device.type)
    for text in tables.values():
        print(text)
    print(f"written: {json_path}, {', '.join(map(str, [*tables, *paths]))}")


def main(argv: list[str] | None = None) -> None:
    """Measure (or, with ``--plot-only``, re-plot) and write JSON + plots."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_with_yaml(build_parser(), argv, "imagenet_measure_speed.yaml")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    device = torch.device(args.device)
    if args.mode == "latency_auto":
        run_latency_mode(args, argv, device)
        return
    stem = Path(args.out_dir) / f"speed_{device.type}"
    json_path = stem.with_suffix(".json")
    if args.plot_only:
        results = json.loads(json_path.read_text())
    else:
        results = _results("speed", args, argv)
        for name in args.models:
            results["rows"] += measure_model(args, name)
            atomic_json_dump(results, json_path)
        print(summary_table(results["rows"]))
    paths = plot_speedup(results, stem)
    print(f"\nwritten: {json_path}, {', '.join(map(str, paths))}")
