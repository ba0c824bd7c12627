"""Allocator-iterations sweep: budget gap and accuracy vs bisection steps on cifar10.

Run `python scripts/cifar10/n_iters_sweep.py --help` for the options; defaults come from
`configs/cifar10_n_iters_sweep.yaml`.
"""

from __future__ import annotations

from balf.experiments.cli import n_iters_sweep_main, run_script


def main(argv: list[str] | None = None) -> None:
    n_iters_sweep_main(argv, "cifar10")


if __name__ == "__main__":
    run_script(main)
