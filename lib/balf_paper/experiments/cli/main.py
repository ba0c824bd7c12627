"""One entry point for the paper's sweeps:
``python -m balf_paper.experiments EXPERIMENT --dataset NAME`` (``--task NAME`` for ``language``).

``EXPERIMENT`` is one of :data:`EXPERIMENTS`: ``factorize``, ``calib-size``, ``n-iters``,
``corrupted`` (evaluate on corrupted test sets), ``calib-shift`` (calibrate on corrupted images,
evaluate on clean ones) on a registered image dataset (:mod:`balf_paper.data.registry`), and
``language`` on a language task (``wikitext``, ``stsb``). Every other option is the experiment's
own (``... factorize --dataset cifar10 --help``), with defaults from
``configs/<dataset>_<experiment>_sweep.yaml`` (``configs/language_<task>.yaml``). The ``.sh``
wrappers under ``scripts/`` run the paper's configurations through it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from balf_paper.data.registry import registered_datasets
from balf_paper.experiments.cli.calib_shift import calib_shift_main
from balf_paper.experiments.cli.image import (
    calib_size_sweep_main,
    corrupted_sweep_main,
    factorize_sweep_main,
    n_iters_sweep_main,
)
from balf_paper.experiments.cli.language import language_main
from balf_paper.experiments.cli.options import is_option, pop_option
from balf_paper.experiments.environment import set_program
from balf_paper.experiments.tasks.language.task import TASKS

__all__ = ["EXPERIMENTS", "Experiment", "main"]


@dataclass(frozen=True)
class Experiment:
    """An experiment of the entry point: ``run(argv, choice)`` with ``choice`` the value of
    ``option`` (one of ``choices()``)."""

    run: Callable[[Sequence[str] | None, str], Any]
    option: str = "--dataset"
    choices: Callable[[], Sequence[str]] = registered_datasets


#: experiment name -> :class:`Experiment`.
EXPERIMENTS: dict[str, Experiment] = {
    "factorize": Experiment(factorize_sweep_main),
    "calib-size": Experiment(calib_size_sweep_main),
    "n-iters": Experiment(n_iters_sweep_main),
    "corrupted": Experiment(corrupted_sweep_main),
    "calib-shift": Experiment(calib_shift_main),
    "language": Experiment(language_main, "--task", lambda: TASKS),
}


def main(argv: Sequence[str] | None = None) -> Any:
    """``python -m balf_paper.experiments EXPERIMENT --dataset NAME [options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m balf_paper.experiments",
        description="Run one of the paper's sweeps on a registered dataset (or language task). "
        "Options after EXPERIMENT are the experiment's own (add --help after it).",
        usage="%(prog)s {" + ",".join(EXPERIMENTS) + "} --dataset NAME [options]",
    )
    parser.add_argument("experiment", choices=list(EXPERIMENTS), metavar="EXPERIMENT")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        print(f"\ndatasets: {', '.join(registered_datasets())}")
        print(f"language tasks (--task): {', '.join(TASKS)}")
        if not argv:
            raise SystemExit(2)
        return None
    name = parser.parse_args(argv[:1]).experiment
    experiment, rest = EXPERIMENTS[name], argv[1:]
    choices = list(experiment.choices())
    asks_help = bool({"-h", "--help"} & set(rest))
    if experiment.option == "--dataset" and not any(is_option(a) for a in rest) and not asks_help:
        parser.error(f"{name}: --dataset is required ({', '.join(choices)})")
    value, rest = pop_option(rest, experiment.option, choices, choices[0])
    set_program(["-m", "balf_paper.experiments", name])  # command.txt: the full command
    try:
        return experiment.run(rest, value)
    finally:
        set_program([])
