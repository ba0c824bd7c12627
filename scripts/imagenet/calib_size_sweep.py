"""Calibration-size sweep (params_auto at 0.4/0.5/0.7/0.8) on ImageNet.

Run `python scripts/imagenet/calib_size_sweep.py --help` for the options; defaults come from
`configs/imagenet_calib_size_sweep.yaml`.
"""

from __future__ import annotations

from balf.experiments.cli import calib_size_sweep_main, run_script


def main(argv: list[str] | None = None) -> None:
    calib_size_sweep_main(argv, "imagenet")


if __name__ == "__main__":
    run_script(main)
