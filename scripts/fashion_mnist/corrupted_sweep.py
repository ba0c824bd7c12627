"""Robustness of compressed models to 15 corruptions x 5 severities (CIFAR-10-C layout).

Run `python scripts/fashion_mnist/corrupted_sweep.py --help` for the options; defaults come from
`configs/fashion-mnist_corrupted_sweep.yaml`.
"""

from __future__ import annotations

from balf.experiments.cli import corrupted_sweep_main, run_script


def main(argv: list[str] | None = None) -> None:
    corrupted_sweep_main(argv, "fashion-mnist")


if __name__ == "__main__":
    run_script(main)
