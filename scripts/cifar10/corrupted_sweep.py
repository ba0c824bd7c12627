"""Robustness of compressed models to 15 corruptions x 5 severities (CIFAR-10-C layout).

Run `python scripts/cifar10/corrupted_sweep.py --help` for the options. ``--dataset cifar10-jpeg``
selects CIFAR-10 (JPEG release) instead of the original release; defaults come from
`configs/<dataset>_corrupted_sweep.yaml`.
The same as `python -m balf_paper.experiments corrupted --dataset cifar10 ...`.
"""

from __future__ import annotations

from balf_paper.experiments.cli.main import experiment_script
from balf_paper.experiments.cli.options import run_script

main = experiment_script("corrupted", ("cifar10", "cifar10-jpeg"))

if __name__ == "__main__":
    run_script(main)
