#!/usr/bin/env bash
# Experiment 2 on CIFAR-10: params_auto at 0.4/0.5/0.7/0.8 with 256 ... 16384 calibration images,
# ResNet-20 and ResNet-56 (configs/cifar10_calib_size_sweep.yaml). Resumable. Extra arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/../.."
for model in resnet20 resnet56; do
  "${PYTHON:-python3}" -m balf_paper.experiments calib-size --dataset cifar10 --model "$model" "$@"
done
