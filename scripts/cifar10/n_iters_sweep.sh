#!/usr/bin/env bash
# Experiment 3 on CIFAR-10: allocator bisection iterations vs budget gap and accuracy, ResNet-20
# (configs/cifar10_n_iters_sweep.yaml). Resumable. Extra arguments are passed on (e.g. --model resnet56).
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" -m balf_paper.experiments n-iters --dataset cifar10 --model resnet20 "$@"
