"""Allocator-iterations sweep: budget gap and accuracy vs bisection steps on fashion-mnist.

Run `python scripts/fashion_mnist/n_iters_sweep.py --help` for the options; defaults come from
`configs/fashion-mnist_n_iters_sweep.yaml`.
The same as `python -m balf_paper.experiments n-iters --dataset fashion-mnist ...`.
"""

from __future__ import annotations

from balf_paper.experiments.cli.main import experiment_script
from balf_paper.experiments.cli.options import run_script

main = experiment_script("n-iters", ("fashion-mnist",))

if __name__ == "__main__":
    run_script(main)
