"""Accuracy vs FLOPs/params of BALF and the SVD baselines (six modes) on fashion-mnist.

Run `python scripts/fashion_mnist/factorize_sweep.py --help` for the options; defaults come from
`configs/fashion-mnist_factorize_sweep.yaml`.
The same as `python -m balf_paper.experiments factorize --dataset fashion-mnist ...`.
"""

from __future__ import annotations

from balf_paper.experiments.cli.main import experiment_script
from balf_paper.experiments.cli.options import run_script

main = experiment_script("factorize", ("fashion-mnist",))

if __name__ == "__main__":
    run_script(main)
