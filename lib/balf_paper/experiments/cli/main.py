"""One entry point for the paper's sweeps:
``python -m balf_paper.experiments EXPERIMENT --dataset NAME``.

``EXPERIMENT`` is one of :data:`EXPERIMENTS` (``factorize``, ``calib-size``, ``n-iters``,
``corrupted``: evaluate on corrupted test sets, ``calib-shift``: calibrate on corrupted images,
evaluate on clean ones); ``--dataset`` one of the registered datasets
(:mod:`balf_paper.data.registry`).
Every other option is the experiment's own (``... factorize --dataset cifar10 --help``), with
defaults from ``configs/<dataset>_<experiment>_sweep.yaml``.

The per-dataset scripts (``scripts/<dataset>/<experiment>_sweep.py``) are this entry point with
the experiment fixed and the dataset choices narrowed (:func:`experiment_script`); their ``.sh``
wrappers call them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from balf_paper.data.registry import registered_datasets
from balf_paper.experiments.cli.calib_shift import calib_shift_main
from balf_paper.experiments.cli.image import (
    calib_size_sweep_main,
    corrupted_sweep_main,
    factorize_sweep_main,
    n_iters_sweep_main,
)
from balf_paper.experiments.cli.options import is_dataset_option, pop_dataset
from balf_paper.experiments.environment import set_program

__all__ = ["EXPERIMENTS", "experiment_script", "main"]

#: ``(argv, dataset) -> None`` per experiment name.
EXPERIMENTS: dict[str, Callable[[Sequence[str] | None, str], None]] = {
    "factorize": factorize_sweep_main,
    "calib-size": calib_size_sweep_main,
    "n-iters": n_iters_sweep_main,
    "corrupted": corrupted_sweep_main,
    "calib-shift": calib_shift_main,
}


def run_experiment(
    experiment: str,
    argv: Sequence[str] | None,
    datasets: Sequence[str],
    default_dataset: str,
) -> None:
    """Run ``experiment`` with ``--dataset`` taken from ``argv`` (one of ``datasets``)."""
    dataset, rest = pop_dataset(argv, datasets, default_dataset)
    EXPERIMENTS[experiment](rest, dataset)


def experiment_script(
    experiment: str, datasets: Sequence[str]
) -> Callable[[Sequence[str] | None], None]:
    """``main(argv)`` of a per-dataset script: ``experiment`` on ``datasets`` (default: first)."""
    if experiment not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {experiment!r}; choose one of {tuple(EXPERIMENTS)}")

    def script_main(argv: Sequence[str] | None = None) -> None:
        run_experiment(experiment, argv, tuple(datasets), datasets[0])

    script_main.__doc__ = f"Run the {experiment!r} experiment on {' or '.join(datasets)}."
    return script_main


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m balf_paper.experiments EXPERIMENT --dataset NAME [options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m balf_paper.experiments",
        description="Run one of the paper's sweeps on a registered dataset. "
        "Options after EXPERIMENT are the experiment's own (add --help after it).",
        usage="%(prog)s {" + ",".join(EXPERIMENTS) + "} --dataset NAME [options]",
    )
    parser.add_argument("experiment", choices=list(EXPERIMENTS), metavar="EXPERIMENT")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        print(f"\ndatasets: {', '.join(registered_datasets())}")
        if not argv:
            raise SystemExit(2)
        return
    experiment = parser.parse_args(argv[:1]).experiment
    rest = argv[1:]
    if not any(is_dataset_option(a) for a in rest) and not ({"-h", "--help"} & set(rest)):
        parser.error(f"{experiment}: --dataset is required ({', '.join(registered_datasets())})")
    datasets = registered_datasets()
    set_program(["-m", "balf_paper.experiments", experiment])  # command.txt: the full command
    try:
        run_experiment(experiment, rest, datasets, datasets[0])
    finally:
        set_program([])
