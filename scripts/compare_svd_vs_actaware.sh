#!/usr/bin/env bash
# Experiment 7: plain SVD vs activation-aware error of single Linear / Conv2d / grouped Conv2d layers,
# on synthetic layers and on ResNet-20 (Fashion-MNIST) layers with real activations -> results/svd_vs_actaware/
# The checkpoint run needs results/fashion-mnist/checkpoints/resnet20/model.pt (scripts/fashion_mnist/pretrain.sh).
# Extra arguments are passed on to both runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" scripts/compare_svd_vs_actaware.py --source synthetic "$@"
"$PY" scripts/compare_svd_vs_actaware.py --source checkpoint --dataset fashion-mnist --model resnet20 \
  --groups 4 "$@"
