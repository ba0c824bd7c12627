"""Calibration under shift on ImageNet: calibrate on corrupted copies of the calibration images
(made here), on the published ImageNet-C (``--imagenet-c-root``) or on ImageNet-V2
(``--imagenet-v2-root``), evaluate on the clean validation images.

Run `python scripts/imagenet/calib_shift_sweep.py --help` for the options; defaults come from
`configs/imagenet_calib_shift_sweep.yaml`.
``--dataset imagenet-samples`` runs it on the ImageNet samples (1,300 val / 1,000 train images;
`configs/imagenet-samples_calib_shift_sweep.yaml`).
The same as `python -m balf_paper.experiments calib-shift --dataset imagenet ...`.
"""

from __future__ import annotations

from balf_paper.experiments.cli.main import experiment_script
from balf_paper.experiments.cli.options import run_script

main = experiment_script("calib-shift", ("imagenet", "imagenet-samples"))

if __name__ == "__main__":
    run_script(main)
