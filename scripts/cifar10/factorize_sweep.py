"""Accuracy vs FLOPs/params of BALF and the SVD baselines (six modes) on CIFAR-10.

Run `python scripts/cifar10/factorize_sweep.py --help` for the options. ``--dataset cifar10-jpeg``
selects CIFAR-10 (JPEG release) instead of the original release; defaults come from
`configs/<dataset>_factorize_sweep.yaml`.
"""

from __future__ import annotations

from balf.experiments.cli import factorize_sweep_main, pop_dataset, run_script


def main(argv: list[str] | None = None) -> None:
    dataset, argv = pop_dataset(argv, ("cifar10", "cifar10-jpeg"), "cifar10")
    factorize_sweep_main(argv, dataset)


if __name__ == "__main__":
    run_script(main)
