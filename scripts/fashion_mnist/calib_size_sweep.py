"""Calibration-size sweep (params_auto at 0.4/0.5/0.7/0.8) on fashion-mnist.

Run `python scripts/fashion_mnist/calib_size_sweep.py --help` for the options; defaults come from
`configs/fashion-mnist_calib_size_sweep.yaml`.
The same as `python -m balf_paper.experiments calib-size --dataset fashion-mnist ...`.
"""

from __future__ import annotations

from balf_paper.experiments.cli.main import experiment_script
from balf_paper.experiments.cli.options import run_script

main = experiment_script("calib-size", ("fashion-mnist",))

if __name__ == "__main__":
    run_script(main)
