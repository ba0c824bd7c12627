"""The image-classification experiments: ``factorize``, ``calib-size``, ``n-iters``,
``corrupted``.

Each ``*_main(argv, dataset)`` parses its options (YAML defaults from
``configs/<dataset>_<experiment>_sweep.yaml``) and runs its plan of sweeps on one
:class:`~balf_paper.experiments.cli.setting.ImageSetting` with the one runner
(:mod:`balf_paper.experiments.sweep.runner`). Options and process-wide settings are in
:mod:`balf_paper.experiments.cli.options`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from balf.errors import BALFError
from balf.ranks.modes import registered_modes
from balf_paper.experiments.cli.options import (
    add_common_arguments,
    configure_process,
    parse_with_yaml,
)
from balf_paper.experiments.cli.setting import ImageSetting
from balf_paper.experiments.layout import CALIB_SIZE_DIR, CORRUPTION_DIR, N_ITERS_DIR
from balf_paper.experiments.sweep.config import default_knobs
from balf_paper.experiments.sweep.seeds import run_dir_of, seeds_of
from balf_paper.experiments.tasks.image.data import corrupted_evaluation
from balf_paper.experiments.tasks.image.task import robustness_evaluation

__all__ = [
    "calib_size_sweep_main",
    "corrupted_sweep_main",
    "factorize_sweep_main",
    "add_refit_arguments",
    "apply_refit_arguments",
    "model_dir",
    "n_iters_sweep_main",
    "run_name",
]


def model_dir(args: argparse.Namespace, dataset: str, *parts: str) -> Path:
    """``<out-root>/<dataset>/<model>/<parts>``."""
    return Path(args.out_root) / dataset / args.model / Path(*parts)


def run_name(args: argparse.Namespace, name: str) -> str:
    """A mode's (or an experiment's) folder name: ``name``, or ``name+<strategy>`` for a
    calibration strategy other than whole-model (``flops_auto+refit``, shown as its own row)."""
    strategy = getattr(args, "strategy", "whole")
    return name if strategy == "whole" else f"{name}+{strategy}"


def add_refit_arguments(parser: argparse.ArgumentParser) -> None:
    """``--refit-beta`` / ``--refit-samples``: the ``refit`` calibration strategy."""
    parser.add_argument(
        "--refit-beta",
        type=float,
        default=None,
        help="refit every factorized layer in forward order on its propagated inputs "
        "(balf.LayerSequential) towards the blend beta of X'W (0) and the dense XW (1) targets; "
        "run folders get the suffix +refit (default: no refit)",
    )
    parser.add_argument(
        "--refit-samples",
        type=int,
        default=None,
        help="calibration images the refit runs on (default: all)",
    )


def apply_refit_arguments(args: argparse.Namespace) -> None:
    """``--refit-beta B [--refit-samples N]`` as ``--strategy refit`` with its options."""
    if getattr(args, "refit_beta", None) is None:
        return
    args.strategy = "refit"
    args.strategy_options = {"beta": args.refit_beta, "samples": args.refit_samples}


def factorize_sweep_main(argv: Sequence[str] | None, dataset: str) -> None:
    """Accuracy vs complexity: every requested mode over its knob values."""
    parser = argparse.ArgumentParser(
        description=f"BALF and baselines on {dataset}: accuracy, "
        "FLOPs and params at every knob value of each mode."
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=[
            "flops_auto",
            "params_auto",
            "energy",
            "energy_act_aware",
            "uniform",
            "uniform_act_aware",
        ],
        choices=list(registered_modes()),
        metavar="MODE",
        help="BALF modes, baselines and Model Folding (folding_ar: data-free, folding_r: BN "
        "statistics from the calibration images, folding_none; knob = kept channel fraction); "
        "one of %(choices)s",
    )
    parser.add_argument(
        "--knobs",
        nargs="+",
        type=float,
        default=None,
        help="override the paper's sweep values (same for every mode)",
    )
    parser.add_argument("--n-iters", type=int, default=300, help="allocator iterations")
    add_refit_arguments(parser)
    args = parse_with_yaml(parser, argv, f"{dataset}_factorize_sweep.yaml")
    configure_process(args)
    apply_refit_arguments(args)
    setting = ImageSetting(args, dataset)
    for seed in seeds_of(args):
        calibration = setting.clean(seed=seed)
        runner = setting.runner(calibration)
        for mode in args.modes:
            knobs = args.knobs or default_knobs(mode, args.model)
            config = setting.config(calibration, mode, knobs, args.n_iters)
            run_dir = model_dir(args, dataset, run_name(args, mode))
            setting.sweep(runner, config, run_dir_of(args, run_dir, seed))


def calib_size_sweep_main(argv: Sequence[str] | None, dataset: str) -> None:
    """Stability in the calibration-set size: one sweep per size."""
    parser = argparse.ArgumentParser(description=f"Calibration-size sweep on {dataset}.")
    add_common_arguments(parser)
    parser.add_argument(
        "--calib-sizes", nargs="+", type=int, default=[256, 512, 1024, 2048, 4096, 8192, 16384]
    )
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.4, 0.5, 0.7, 0.8])
    parser.add_argument("--mode", default="params_auto")
    args = parse_with_yaml(parser, argv, f"{dataset}_calib_size_sweep.yaml")
    configure_process(args)
    setting = ImageSetting(args, dataset)
    for seed in seeds_of(args):
        for size in args.calib_sizes:
            calibration = setting.clean(size, seed)
            config = setting.config(calibration, args.mode, args.ratios)
            run_dir = model_dir(args, dataset, run_name(args, CALIB_SIZE_DIR), f"calib{size}")
            setting.sweep(setting.runner(calibration), config, run_dir_of(args, run_dir, seed))


def n_iters_sweep_main(argv: Sequence[str] | None, dataset: str) -> None:
    """Allocator bisection iterations: budget gap and accuracy per iteration count."""
    parser = argparse.ArgumentParser(description=f"Allocator-iterations sweep on {dataset}.")
    add_common_arguments(parser)
    parser.add_argument(
        "--n-iters-values",
        nargs="+",
        type=int,
        default=[1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100, 300],
    )
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.4, 0.6, 0.8])
    parser.add_argument("--mode", default="flops_auto")
    args = parse_with_yaml(parser, argv, f"{dataset}_n_iters_sweep.yaml")
    configure_process(args)
    setting = ImageSetting(args, dataset)
    for seed in seeds_of(args):
        calibration = setting.clean(seed=seed)
        runner = setting.runner(calibration)
        for n in args.n_iters_values:
            config = setting.config(calibration, args.mode, args.ratios, n)
            run_dir = model_dir(args, dataset, run_name(args, N_ITERS_DIR), f"iters{n}")
            setting.sweep(runner, config, run_dir_of(args, run_dir, seed))


def corrupted_sweep_main(argv: Sequence[str] | None, dataset: str) -> None:
    """Robustness: accuracy on every corruption and severity of the compressed models."""
    from balf_paper.data import CORRUPTIONS, SEVERITIES

    parser = argparse.ArgumentParser(
        description=f"Corruption robustness of compressed models on {dataset} (CIFAR-10-C layout)."
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--corrupted-root",
        required=False,
        default=None,
        help="folder with labels.npy and <corruption>.npy",
    )
    parser.add_argument("--modes", nargs="+", default=["params_auto", "flops_auto"])
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.6, 0.7, 0.8])
    parser.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS))
    parser.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES))
    args = parse_with_yaml(parser, argv, f"{dataset}_corrupted_sweep.yaml")
    configure_process(args)
    if not args.corrupted_root:
        raise BALFError("--corrupted-root is required (folder in the CIFAR-10-C layout)")
    setting = ImageSetting(args, dataset)
    loaders = {
        (c, s): setting.loader(
            corrupted_evaluation(
                dataset, args.corrupted_root, c, s, args.eval_size, args.seed, args.model
            )
        )
        for c in args.corruptions
        for s in args.severities
    }
    robustness = robustness_evaluation(setting.evaluation, loaders, args.device)
    evaluation = {
        "corrupted_root": str(args.corrupted_root),
        "corruptions": list(args.corruptions),
        "severities": list(args.severities),
    }
    for seed in seeds_of(args):
        calibration = setting.clean(seed=seed)
        runner = setting.runner(calibration, robustness, "corrupted")
        for mode in args.modes:
            config = setting.config(calibration, mode, args.ratios, evaluation=evaluation)
            run_dir = model_dir(args, dataset, CORRUPTION_DIR, run_name(args, mode))
            run_dir = run_dir_of(args, run_dir, seed)
            setting.sweep(runner, config, run_dir)
