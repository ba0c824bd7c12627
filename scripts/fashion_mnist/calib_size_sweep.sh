#!/usr/bin/env bash
# Experiment 2 on Fashion-MNIST: params_auto at 0.4/0.5/0.7/0.8 with 256 ... 16384 calibration
# images, ResNet-20 (full test set) and ResNet-56 (fixed, seeded 5000-image test subset).
set -euo pipefail
cd "$(dirname "$0")/../.."
for model in ${MODELS:-resnet20 resnet56}; do
  subset=()
  [ "$model" = resnet56 ] && subset=(--eval-size 5000)
  "${PYTHON:-python3}" scripts/fashion_mnist/calib_size_sweep.py --model "$model" "${subset[@]}" "$@"
done
