#!/usr/bin/env bash
# Experiment 5: per-phase compression time and peak memory of every ImageNet model
# (flops_auto at 0.6, 8192 calibration images, batch 64; configs/imagenet_compression_time.yaml).
# Each model runs in its own subprocess; rerunning with --resume skips the models already measured.
# Extra arguments are passed on, e.g. --synthetic (no ImageNet needed) or --models resnet18.
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" scripts/imagenet/measure_compression_time.py --resume "$@"
