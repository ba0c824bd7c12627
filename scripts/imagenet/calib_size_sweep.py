"""Calibration-size sweep (params_auto at 0.4/0.5/0.7/0.8) on ImageNet.

Run `python scripts/imagenet/calib_size_sweep.py --help` for the options; defaults come from
`configs/imagenet_calib_size_sweep.yaml`.
The same as `python -m balf_paper.experiments calib-size --dataset imagenet ...`.
"""

from __future__ import annotations

from balf_paper.experiments.cli.main import experiment_script
from balf_paper.experiments.cli.options import run_script

main = experiment_script("calib-size", ("imagenet", "imagenet-samples"))

if __name__ == "__main__":
    run_script(main)
