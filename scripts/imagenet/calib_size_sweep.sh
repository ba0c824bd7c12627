#!/usr/bin/env bash
# Experiment 2 on ImageNet: params_auto at 0.4/0.5/0.7/0.8 with 256 ... 16384 calibration images
# (configs/imagenet_calib_size_sweep.yaml). Resumable. Extra arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/../.."
for model in resnet18 resnet50; do
  "${PYTHON:-python3}" -m balf_paper.experiments calib-size --dataset imagenet --model "$model" "$@"
done
