"""Helper of the paper tests: one experiment of ``python -m balf_paper.experiments`` with the
dataset it runs on by default (a later ``--dataset`` in ``argv`` wins)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from balf_paper.experiments.cli.main import main as experiments_main


@dataclass(frozen=True)
class experiment:  # noqa: N801 (used like a function)
    """``experiment(name, dataset).main(argv)`` (or called) runs
    ``python -m balf_paper.experiments name --dataset dataset *argv``."""

    name: str
    dataset: str

    def main(self, argv: Sequence[str] = ()) -> Any:
        return experiments_main([self.name, "--dataset", self.dataset, *argv])

    __call__ = main
