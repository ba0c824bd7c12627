#!/usr/bin/env bash
# Experiment 3 on Fashion-MNIST: budget gap and accuracy vs allocator bisection iterations (ResNet-20).
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" -m balf_paper.experiments n-iters --dataset fashion-mnist --model resnet20 "$@"
