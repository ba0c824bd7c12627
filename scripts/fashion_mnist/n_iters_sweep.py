"""Allocator-iterations sweep: budget gap and accuracy vs bisection steps on fashion-mnist.

Run `python scripts/fashion_mnist/n_iters_sweep.py --help` for the options; defaults come from
`configs/fashion-mnist_n_iters_sweep.yaml`.
"""

from __future__ import annotations

from balf.experiments.cli import n_iters_sweep_main, run_script


def main(argv: list[str] | None = None) -> None:
    n_iters_sweep_main(argv, "fashion-mnist")


if __name__ == "__main__":
    run_script(main)
