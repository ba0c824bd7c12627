#!/usr/bin/env bash
# Experiment 1 on CIFAR-10: the six modes for ResNet-20 and ResNet-56 (configs/cifar10_factorize_sweep.yaml).
# Needs the trained models (scripts/cifar10/pretrain_resnet.sh). Resumable. Extra arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/../.."
for model in resnet20 resnet56; do
  "${PYTHON:-python3}" scripts/cifar10/factorize_sweep.py --model "$model" "$@"
done
