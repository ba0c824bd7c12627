#!/usr/bin/env bash
# Experiment 2 on Fashion-MNIST: params_auto at 0.4/0.5/0.7/0.8 with 256 ... 16384 calibration
# images, ResNet-20 and ResNet-56, full test set.
set -euo pipefail
cd "$(dirname "$0")/../.."
for model in ${MODELS:-resnet20 resnet56}; do
  "${PYTHON:-python3}" -m balf_paper.experiments calib-size --dataset fashion-mnist --model "$model" "$@"
done
