"""Command-line plumbing shared by the experiment scripts.

Every script is argparse with ``--help``; defaults come from a YAML file in ``configs/``
(``--config``) and any option overrides them. A config named without a folder is looked up in
``./configs/`` and in the ``configs/`` folder of the checkout holding the running script
(see :func:`find_config`); the library itself ships no experiment defaults. The sweep scripts
of all datasets call the ``*_main`` functions below with their dataset name, so there is one
implementation per experiment.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from ..api import Compressor
from ..cache import Cache
from ..data import make_loader
from ..distributed import init_from_environment, shard
from ..errors import BALFError
from ..modes import registered_modes
from .datasets import corrupted_evaluation, experiment_data, experiment_model
from .evaluation import evaluate
from .sweep import SweepConfig, default_knobs, run_sweep

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
]

log = logging.getLogger(__name__)


def find_config(name: str | Path) -> Path | None:
    """The YAML file ``name``: as given, else ``configs/<name>`` in the working directory or
    beside the running script (in it or up to three folders above); ``None`` if absent."""
    path = Path(name)
    if path.is_file() or path.is_absolute():
        return path if path.is_file() else None
    folders = [Path.cwd()]
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.is_file():
        folders += list(script.resolve().parents)[:4]
    for folder in folders:
        candidate = folder / "configs" / path.name
        if candidate.is_file():
            return candidate
    return None


def parse_with_yaml(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, default_config: str | None
) -> argparse.Namespace:
    """Parse ``argv`` with defaults taken from ``--config`` (a YAML mapping of option names).

    YAML keys use the options' names with ``-`` or ``_``; unknown keys are an error.
    """
    parser.add_argument(
        "--config",
        default=default_config,
        help="YAML file with defaults for these options (default: %(default)s)",
    )
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        path = find_config(pre.config)
        if path is None and pre.config != default_config:
            raise BALFError(f"config file {pre.config} not found (nor in a configs/ folder)")
        if path is None:
            log.warning("%s not found; using the built-in defaults", default_config)
        else:
            parser.set_defaults(**_yaml_defaults(path, {a.dest for a in parser._actions}))
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else None  # recorded in each run's command.txt
    return args


def _yaml_defaults(path: Path, known: set[str]) -> dict[str, Any]:
    values = yaml.safe_load(path.read_text()) or {}
    defaults = {}
    for key, value in values.items():
        dest = key.replace("-", "_")
        if dest not in known:
            raise BALFError(f"{path}: unknown option {key!r}")
        defaults[dest] = value
    return defaults


def configure_process(args: argparse.Namespace) -> None:
    """Process-wide settings of an experiment entry point (never done by library classes):
    INFO logging, ``--threads`` CPU threads, and the torchrun process group (``args.device``
    becomes this process's device)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = init_from_environment(args.device)  # torchrun: one process per device


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every sweep script shares."""
    g = parser.add_argument_group("common")
    g.add_argument("--model", default="resnet20", help="model name (default: %(default)s)")
    g.add_argument("--data-root", default="datasets", help="dataset folder")
    g.add_argument(
        "--checkpoint",
        default=None,
        help="weights of a CIFAR/Fashion-MNIST model (default: results/<dataset>/"
        "checkpoints/<model>/model.pt)",
    )
    g.add_argument(
        "--random-weights",
        action="store_true",
        help="use untrained weights (fixtures and benchmarks only)",
    )
    g.add_argument("--calib-size", type=int, default=1024, help="calibration images")
    g.add_argument("--seed", type=int, default=0, help="seed of calibration/evaluation subsets")
    g.add_argument(
        "--eval-size",
        type=int,
        default=None,
        help="evaluate on a seeded subset of this size (default: full set)",
    )
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--out-root", default="results", help="results folder")
    g.add_argument(
        "--cache-root", default=".", help="folder of activation-cache/ and factorization-cache/"
    )
    g.add_argument("--no-cache", action="store_true", help="do not cache statistics")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="compute at most this many new points per sweep, then stop",
    )


class ExperimentContext:
    """Model, data and loaders of one (dataset, model, calibration) setting.

    ``args`` are parsed options (:func:`add_common_arguments`); process-wide settings are the
    entry point's business (:func:`configure_process`).
    """

    def __init__(self, args: argparse.Namespace, dataset: str, calib_size: int | None = None):
        self.args = args
        self.dataset = dataset
        self.calib_size = calib_size or args.calib_size
        self.model, self.weights = experiment_model(
            dataset,
            args.model,
            args.checkpoint,
            pretrained=not args.random_weights,
            seed=args.seed,
        )
        self.data = experiment_data(
            dataset, args.data_root, args.model, self.calib_size, args.seed, args.eval_size
        )
        # under torchrun each process calibrates and evaluates its shard; sums are all-reduced
        self.calibration = make_loader(shard(self.data.calibration), args.batch_size, args.workers)
        self.evaluation = make_loader(shard(self.data.evaluation), args.batch_size, args.workers)
        self.example = self.data.evaluation[0][0].unsqueeze(0)
        self._originals: dict[Any, dict[str, Any]] = {}  # uncompressed point per evaluation
        tag = self.data.data_tag + ("-random" if args.random_weights else "")
        self.cache = None if args.no_cache else Cache(args.cache_root, tag, self.calib_size)
        self.model = self.model.to(args.device)
        self.compressor = Compressor(
            self.model, self.calibration, cache=self.cache, progress=not args.no_progress
        )

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
            seed=a.seed,
            n_iters=n_iters,
            eval_size=a.eval_size,
            weights=self.weights,
            evaluation=evaluation or {},
            extra={"data_root": str(a.data_root), "batch_size": a.batch_size},
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
            argv=getattr(a, "argv", None),
        )
        self._originals[evaluate_fn] = results["points"][0]
        return results


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
    args = parse_with_yaml(parser, argv, f"{dataset}_factorize_sweep.yaml")
    configure_process(args)
    ctx = ExperimentContext(args, dataset)
    for mode in args.modes:
        knobs = args.knobs or default_knobs(mode, args.model)
        ctx.sweep(mode, knobs, _run_dir(args, dataset, mode), args.n_iters)


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
    for size in args.calib_sizes:
        ctx = ExperimentContext(args, dataset, calib_size=size)
        ctx.sweep(args.mode, args.ratios, _run_dir(args, dataset, "calib-size", f"calib{size}"))


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
    ctx = ExperimentContext(args, dataset)
    for n in args.n_iters_values:
        ctx.sweep(args.mode, args.ratios, _run_dir(args, dataset, "n-iters", f"iters{n}"), n)


def corrupted_sweep_main(argv: Sequence[str] | None, dataset: str) -> None:
    """Robustness: accuracy on every corruption and severity of the compressed models."""
    from ..data import CORRUPTIONS, SEVERITIES

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
    ctx = ExperimentContext(args, dataset)
    loaders = {
        (c, s): make_loader(
            shard(
                corrupted_evaluation(dataset, args.corrupted_root, c, s, args.eval_size, args.seed)
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

    for mode in args.modes:
        ctx.sweep(
            mode,
            args.ratios,
            _run_dir(args, dataset, "corruption", mode),
            evaluate_fn=robustness,
            evaluation={
                "corrupted_root": str(args.corrupted_root),
                "corruptions": list(args.corruptions),
                "severities": list(args.severities),
            },
        )
