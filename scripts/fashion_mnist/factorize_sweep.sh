#!/usr/bin/env bash
# Experiment 1 on Fashion-MNIST: the six modes over the paper's grid, then Model Folding (AR, R),
# for ResNet-20 and ResNet-56. Needs the committed checkpoints (scripts/fashion_mnist/pretrain.sh).
# Both are evaluated on the full test set. Resumable; extra arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
for model in ${MODELS:-resnet20 resnet56}; do
  "$PY" -m balf_paper.experiments factorize --dataset fashion-mnist --model "$model" "$@"
  "$PY" -m balf_paper.experiments factorize --dataset fashion-mnist --model "$model" \
    --modes folding_ar folding_r "$@"
done
