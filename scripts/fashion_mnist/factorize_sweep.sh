#!/usr/bin/env bash
# Experiment 1 on Fashion-MNIST: the six modes over the paper's grid for ResNet-20 and ResNet-56.
# Needs the committed checkpoints (scripts/fashion_mnist/pretrain.sh). Resumable; extra args passed on.
set -euo pipefail
cd "$(dirname "$0")/../.."
for model in ${MODELS:-resnet20 resnet56}; do
  "${PYTHON:-python3}" scripts/fashion_mnist/factorize_sweep.py --model "$model" "$@"
done
