"""Accuracy vs FLOPs/params of BALF and the SVD baselines (six modes) on ImageNet.

Run `python scripts/imagenet/factorize_sweep.py --help` for the options; defaults come from
`configs/imagenet_factorize_sweep.yaml`.
"""

from __future__ import annotations

from balf.experiments.cli import factorize_sweep_main, run_script


def main(argv: list[str] | None = None) -> None:
    factorize_sweep_main(argv, "imagenet")


if __name__ == "__main__":
    run_script(main)
