"""Robustness of compressed models to 15 corruptions x 5 severities (CIFAR-10-C layout).

Run `python scripts/fashion_mnist/corrupted_sweep.py --help` for the options; defaults come from
`configs/fashion-mnist_corrupted_sweep.yaml`.
The same as `python -m balf_paper.experiments corrupted --dataset fashion-mnist ...`.
"""

from __future__ import annotations

from balf_paper.experiments.cli.main import experiment_script
from balf_paper.experiments.cli.options import run_script

main = experiment_script("corrupted", ("fashion-mnist",))

if __name__ == "__main__":
    run_script(main)
