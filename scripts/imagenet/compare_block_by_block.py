"""Whole-model vs block-by-block calibration of an ImageNet classifier (issue 22, deliverable 4).

Compresses the model with each mode at each knob twice, once with whole-model calibration and
once with :class:`balf.BlockByBlock` (blocks auto-detected: MobileNetV2's ``features``), and
evaluates top-1 on the evaluation set. Same ranks both ways; only the factors differ (block by
block whitens each block on the outputs of the blocks already compressed). One JSON file with
every point (resumable: stored points are kept), the command, the environment and the data.

Example (the ImageNet samples laid out by ``bash scripts/imagenet/get_samples.sh``):
    python scripts/imagenet/compare_block_by_block.py --dataset imagenet-samples \\
        --model mobilenet_v2_q8 --data-root datasets --knobs 0.9
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

import balf
from balf.io.atomic import atomic_json_dump
from balf_paper.data import make_loader
from balf_paper.experiments.cli.options import run_script
from balf_paper.experiments.environment import environment_info
from balf_paper.experiments.render.labels import dataset_label
from balf_paper.experiments.tasks.image.data import experiment_data, experiment_model
from balf_paper.experiments.tasks.image.evaluation import evaluate


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="imagenet-samples")
    p.add_argument("--model", default="mobilenet_v2_q8")
    p.add_argument("--data-root", default="datasets")
    p.add_argument("--calib-size", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--modes", nargs="+", default=["flops_auto", "uniform_act_aware"])
    p.add_argument("--knobs", nargs="+", type=float, default=[0.9])
    p.add_argument(
        "--strategies", nargs="+", default=["whole", "block"], choices=["whole", "block"]
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random-weights", action="store_true", help="random weights (fixtures)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--out",
        default=None,
        help="JSON file (default: results/<dataset>/block_by_block/<model>.json)",
    )
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out or f"results/{args.dataset}/block_by_block/{args.model}.json")
    stored = json.loads(out.read_text()) if out.is_file() else {"points": []}
    model, weights = experiment_model(
        args.dataset, args.model, pretrained=not args.random_weights, seed=args.seed
    )
    data = experiment_data(args.dataset, args.data_root, args.model, args.calib_size, args.seed)
    calibration = make_loader(data.calibration, args.batch_size)
    evaluation = make_loader(data.evaluation, args.batch_size)
    record = {
        "command": "python scripts/imagenet/compare_block_by_block.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "environment": environment_info("cpu"),
        "dataset": dataset_label(args.dataset),
        "model": args.model,
        "weights": weights,
        "calibration": f"{len(data.calibration)} training images ({data.data_tag})",
        "evaluation": f"{len(data.evaluation)} validation images",
    }
    if "baseline" not in stored:
        result = evaluate(model, evaluation, progress=False)
        stored["baseline"] = {"top1": result.accuracy, "loss": result.loss}
        atomic_json_dump({**stored, **record}, out)
    compressors: dict[str, balf.Compressor] = {}
    for knob in args.knobs:
        for mode in args.modes:
            for strategy in args.strategies:
                key = {"mode": mode, "knob": knob, "strategy": strategy}
                if any(all(p[k] == v for k, v in key.items()) for p in stored["points"]):
                    continue
                if strategy not in compressors:
                    compressors[strategy] = balf.Compressor(
                        model,
                        calibration,
                        progress=False,
                        strategy=balf.BlockByBlock() if strategy == "block" else None,
                    )
                start = time.perf_counter()
                small, report = compressors[strategy].compress(balf.config_for_mode(mode, knob))
                seconds = time.perf_counter() - start
                result = evaluate(small, evaluation, progress=False)
                stored["points"].append(
                    {
                        **key,
                        "top1": result.accuracy,
                        "loss": result.loss,
                        "model_flops_ratio": report.model_flops_ratio,
                        "model_params_ratio": report.model_params_ratio,
                        "layer_flops_ratio": report.layer_flops_ratio,
                        "ranks": report.ranks,
                        "timings": report.timings,
                        "seconds_compress": seconds,
                        "blocks": (report.strategy or {}).get("blocks"),
                    }
                )
                atomic_json_dump({**stored, **record}, out)
                logging.info("%s %s %.2f: top-1 %.4f", strategy, mode, knob, result.accuracy)
    return stored


if __name__ == "__main__":
    run_script(main)
