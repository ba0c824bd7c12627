"""Calibration-size sweep (params_auto at 0.4/0.5/0.7/0.8) on CIFAR-10.

Run `python scripts/cifar10/calib_size_sweep.py --help` for the options. ``--dataset cifar10-jpeg``
selects CIFAR-10 (JPEG release) instead of the original release; defaults come from
`configs/<dataset>_calib_size_sweep.yaml`.
The same as `python -m balf_paper.experiments calib-size --dataset cifar10 ...`.
"""

from __future__ import annotations

from balf_paper.experiments.cli.main import experiment_script
from balf_paper.experiments.cli.options import run_script

main = experiment_script("calib-size", ("cifar10", "cifar10-jpeg"))

if __name__ == "__main__":
    run_script(main)
