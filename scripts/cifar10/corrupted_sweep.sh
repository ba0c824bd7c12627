#!/usr/bin/env bash
# Experiment 4: CIFAR-10-C robustness of compressed ResNet-20 (params_auto, flops_auto at 0.6/0.7/0.8;
# configs/cifar10_corrupted_sweep.yaml, CIFAR-10-C in datasets/CIFAR-10-C). Resumable. Extra arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" -m balf_paper.experiments corrupted --dataset cifar10 --model resnet20 "$@"
