"""Accuracy vs FLOPs/params of BALF and the SVD baselines (six modes) on ImageNet.

Run `python scripts/imagenet/factorize_sweep.py --help` for the options; defaults come from
`configs/imagenet_factorize_sweep.yaml`.
The same as `python -m balf_paper.experiments factorize --dataset imagenet ...`.
"""

from __future__ import annotations

from balf_paper.experiments.cli.main import experiment_script
from balf_paper.experiments.cli.options import run_script

main = experiment_script("factorize", ("imagenet", "imagenet-samples"))

if __name__ == "__main__":
    run_script(main)
