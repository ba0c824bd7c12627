#!/usr/bin/env bash
# Experiment 1 on Fashion-MNIST: the six modes over the paper's grid, then Model Folding (AR, R),
# for ResNet-20 and ResNet-56. Needs the committed checkpoints (scripts/fashion_mnist/pretrain.sh).
# ResNet-20 is evaluated on the full test set; ResNet-56 (3x the cost per evaluation) on a fixed,
# seeded subset of 5000 of the 10000 test images. Resumable; extra arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
for model in ${MODELS:-resnet20 resnet56}; do
  subset=()
  [ "$model" = resnet56 ] && subset=(--eval-size 5000)
  "$PY" scripts/fashion_mnist/factorize_sweep.py --model "$model" "${subset[@]}" "$@"
  "$PY" scripts/fashion_mnist/factorize_sweep.py --model "$model" "${subset[@]}" \
    --modes folding_ar folding_r "$@"
done
