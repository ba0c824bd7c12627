"""The experiment entry points shared by the scripts of every dataset.

The sweep scripts of all datasets call the ``*_main`` functions below with their dataset name,
so there is one implementation per experiment. Options, YAML defaults (``configs/``) and
process-wide settings are in :mod:`balf_paper.experiments.cli.options` (re-exported here).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from balf.calibration.distributed import shard
from balf.compressor import Compressor
from balf.errors import BALFError
from balf.io.cache import Cache
from balf.ranks.modes import registered_modes
from balf.refit import AnchoredRefit
from balf.sequential import LayerSequential
from balf_paper.data import make_loader
from balf_paper.data.registry import dataset_info
from balf_paper.experiments.cli.options import (
    add_common_arguments,
    configure_process,
    find_config,
    parse_with_yaml,
    pop_dataset,
    recorded_argv,
    run_script,
)
from balf_paper.experiments.sweep.runner import SweepConfig, default_knobs, run_sweep
from balf_paper.experiments.sweep.seeds import run_dir_of, seeds_of
from balf_paper.experiments.tasks.image.data import (
    corrupted_evaluation,
    experiment_data,
    experiment_model,
    require_checkpoint,
)
from balf_paper.experiments.tasks.image.evaluation import evaluate

__all__ = [
    "ExperimentContext",
    "add_common_arguments",
    "configure_process",
    "find_config",
    "calib_size_sweep_main",
    "corrupted_sweep_main",
    "factorize_sweep_main",
    "n_iters_sweep_main",
    "parse_with_yaml",
    "pop_dataset",
    "run_script",
]


class ExperimentContext:
    """Model, data and loaders of one (dataset, model, calibration) setting.

    ``args`` are parsed options (:func:`add_common_arguments`); process-wide settings are the
    entry point's business (:func:`configure_process`).
    """

    def __init__(
        self,
        args: argparse.Namespace,
        dataset: str,
        calib_size: int | None = None,
        calib_seed: int | None = None,
        originals: dict[Any, dict[str, Any]] | None = None,
    ):
        self.args = args
        self.dataset = dataset
        self.calib_size = calib_size or args.calib_size
        self.calib_seed = args.seed if calib_seed is None else calib_seed
        # every local input is checked before anything is downloaded: the checkpoint, then
        # the data (Fashion-MNIST may be downloaded), then the weights (ImageNet: downloaded)
        if not dataset_info(dataset).public_weights and not args.random_weights:
            require_checkpoint(dataset, args.model, args.checkpoint)
        self.data = experiment_data(
            dataset,
            args.data_root,
            args.model,
            self.calib_size,
            args.seed,
            args.eval_size,
            calib_seed=self.calib_seed,
        )
        self.model, self.weights = experiment_model(
            dataset,
            args.model,
            args.checkpoint,
            pretrained=not args.random_weights,
            seed=args.seed,
        )
        # under torchrun each process calibrates and evaluates its shard; sums are all-reduced
        self.calibration = make_loader(shard(self.data.calibration), args.batch_size, args.workers)
        self.evaluation = make_loader(shard(self.data.evaluation), args.batch_size, args.workers)
        self.example = self.data.evaluation[0][0].unsqueeze(0)
        # uncompressed point per evaluation: the evaluation data does not depend on the
        # calibration, so contexts that differ only in calibration (seeds, sizes) share one
        self._originals: dict[Any, dict[str, Any]] = {} if originals is None else originals
        self.model = self.model.to(args.device)
        self.calibration_shift: dict[str, Any] = {}
        self.recalibrate(self.data.calibration, self.data.data_tag)

    def recalibrate(
        self, calibration: Any, data_tag: str, shift: dict[str, Any] | None = None
    ) -> None:
        """Calibrate the following sweeps on ``calibration`` (a dataset of ``(image, label)``;
        ``shift``: its corruption, recorded in each sweep's config); evaluation is unchanged."""
        args = self.args
        self.calibration = make_loader(shard(calibration), args.batch_size, args.workers)
        self.calibration_shift = dict(shift or {})
        tag = data_tag + ("-random" if args.random_weights else "")
        self.cache = None if args.no_cache else Cache(args.cache_root, tag, self.calib_size)
        self.strategy = refit_strategy(args)
        self.compressor = Compressor(
            self.model,
            self.calibration,
            cache=self.cache,
            progress=not args.no_progress,
            strategy=self.strategy,
        )

    def _save_dir(self, out_dir: Path) -> Path | None:
        return _save_dir_of(self.args, out_dir)

    def sweep(
        self,
        mode: str,
        knobs: Sequence[float],
        out_dir: Path,
        n_iters: int = 300,
        evaluate_fn: Callable | None = None,
        evaluation: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        a = self.args
        config = SweepConfig(
            dataset=self.dataset,
            model=a.model,
            mode=mode,
            knobs=[float(k) for k in knobs],
            calib_size=self.calib_size,
            seed=self.calib_seed,
            eval_seed=None if self.calib_seed == a.seed or a.eval_size is None else a.seed,
            calibration_shift=self.calibration_shift,
            n_iters=n_iters,
            eval_size=a.eval_size,
            weights=self.weights,
            evaluation=evaluation or {},
            extra={
                "data_root": str(a.data_root),
                "batch_size": a.batch_size,
                **({"strategy": self.strategy.to_dict()} if self.strategy is not None else {}),
            },
        )
        results = run_sweep(
            config,
            self.model,
            self.calibration,
            self.evaluation,
            out_dir,
            example_input=self.example,
            device=a.device,
            cache=self.cache,
            progress=not a.no_progress,
            evaluate_fn=evaluate_fn,
            stop_after=a.stop_after,
            original=self._originals.get(evaluate_fn),
            compressor=self.compressor,
            argv=recorded_argv(getattr(a, "argv", None), self.dataset),
            save_dir=self._save_dir(out_dir),
            save_knobs=getattr(a, "save_knobs", None),
        )
        self._originals[evaluate_fn] = results["points"][0]
        return results


def _save_dir_of(args: argparse.Namespace, out_dir: Path) -> Path | None:
    """``--save-model DIR`` mirrored by the run folder's path below ``--out-root``."""
    if not getattr(args, "save_model", None):
        return None
    out_dir = Path(out_dir)
    try:
        relative = out_dir.resolve().relative_to(Path(args.out_root).resolve())
    except ValueError:
        relative = Path(out_dir.name)
    return Path(args.save_model) / relative


#: Suffix of the run folder of a mode run with ``--refit-beta`` (``flops_auto+refit``).
REFIT_SUFFIX = "+refit"


def refit_strategy(args: argparse.Namespace) -> LayerSequential | None:
    """The layer-sequential refit ``--refit-beta``/``--refit-samples`` ask for, else ``None``."""
    beta = getattr(args, "refit_beta", None)
    if beta is None:
        return None
    return LayerSequential(AnchoredRefit(beta=beta), samples=getattr(args, "refit_samples", None))


def _run_dir(args: argparse.Namespace, dataset: str, *parts: str) -> Path:
    return Path(args.out_root) / dataset / args.model / Path(*parts)


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
    args = parse_with_yaml(parser, argv, f"{dataset}_factorize_sweep.yaml")
    configure_process(args)
    originals: dict[Any, dict[str, Any]] = {}
    suffix = REFIT_SUFFIX if args.refit_beta is not None else ""
    for seed in seeds_of(args):
        ctx = ExperimentContext(args, dataset, calib_seed=seed, originals=originals)
        for mode in args.modes:
            knobs = args.knobs or default_knobs(mode, args.model)
            run_dir = run_dir_of(args, _run_dir(args, dataset, mode + suffix), seed)
            ctx.sweep(mode, knobs, run_dir, args.n_iters)


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
    originals: dict[Any, dict[str, Any]] = {}
    for seed in seeds_of(args):
        for size in args.calib_sizes:
            ctx = ExperimentContext(
                args, dataset, calib_size=size, calib_seed=seed, originals=originals
            )
            run_dir = _run_dir(args, dataset, "calib-size", f"calib{size}")
            ctx.sweep(args.mode, args.ratios, run_dir_of(args, run_dir, seed))


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
    originals: dict[Any, dict[str, Any]] = {}
    for seed in seeds_of(args):
        ctx = ExperimentContext(args, dataset, calib_seed=seed, originals=originals)
        for n in args.n_iters_values:
            run_dir = _run_dir(args, dataset, "n-iters", f"iters{n}")
            ctx.sweep(args.mode, args.ratios, run_dir_of(args, run_dir, seed), n)


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
    for seed in seeds_of(args):
        ctx = ExperimentContext(args, dataset, calib_seed=seed)
        robustness = _robustness_evaluation(ctx, args, dataset)
        for mode in args.modes:
            _corrupted_sweep(ctx, args, dataset, mode, seed, robustness)


def _corrupted_sweep(ctx, args, dataset, mode, seed, robustness) -> None:
    """One mode of :func:`corrupted_sweep_main` for one calibration seed."""
    ctx.sweep(
        mode,
        args.ratios,
        run_dir_of(args, _run_dir(args, dataset, "corruption", mode), seed),
        evaluate_fn=robustness,
        evaluation={
            "corrupted_root": str(args.corrupted_root),
            "corruptions": list(args.corruptions),
            "severities": list(args.severities),
        },
    )


def _robustness_evaluation(
    ctx: ExperimentContext, args: argparse.Namespace, dataset: str
) -> Callable[[Any], dict[str, Any]]:
    """``model -> point fields``: clean accuracy/loss plus accuracy on every corrupted set.

    ``corrupted`` maps corruption -> severity (as a string) -> accuracy; ``corrupted_accuracy`` is
    their mean over all (corruption, severity) pairs.
    """
    loaders = {
        (c, s): make_loader(
            shard(
                corrupted_evaluation(
                    dataset, args.corrupted_root, c, s, args.eval_size, args.seed, args.model
                )
            ),
            args.batch_size,
            args.workers,
        )
        for c in args.corruptions
        for s in args.severities
    }

    def robustness(model) -> dict[str, Any]:
        clean = evaluate(model, ctx.evaluation, args.device, progress=False)
        per: dict[str, dict[str, float]] = {}
        for (c, s), loader in loaders.items():
            per.setdefault(c, {})[str(s)] = evaluate(
                model, loader, args.device, progress=False
            ).accuracy
        accs = [a for sev in per.values() for a in sev.values()]
        return {
            "accuracy": clean.accuracy,
            "loss": clean.loss,
            "corrupted_accuracy": sum(accs) / len(accs),
            "corrupted": per,
            "eval_samples": clean.samples,
        }

    return robustness
