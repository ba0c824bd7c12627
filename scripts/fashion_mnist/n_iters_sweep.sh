#!/usr/bin/env bash
# Experiment 3 on Fashion-MNIST: budget gap and accuracy vs allocator bisection iterations (ResNet-20).
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" scripts/fashion_mnist/n_iters_sweep.py --model resnet20 "$@"
