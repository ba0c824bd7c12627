"""Calibration under shift: compress ResNet-20 with calibration images from each corrupted set
(corruption x severity, made here from the calibration subset), evaluate on the clean test set.

Run `python scripts/cifar10/calib_shift_sweep.py --help` for the options. ``--dataset cifar10-jpeg``
selects CIFAR-10 (JPEG release); defaults come from `configs/<dataset>_calib_shift_sweep.yaml`.
The same as `python -m balf_paper.experiments calib-shift --dataset cifar10 ...`.
"""

from __future__ import annotations

from balf_paper.experiments.cli.main import experiment_script
from balf_paper.experiments.cli.options import run_script

main = experiment_script("calib-shift", ("cifar10", "cifar10-jpeg"))

if __name__ == "__main__":
    run_script(main)
