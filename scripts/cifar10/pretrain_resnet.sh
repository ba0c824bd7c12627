#!/usr/bin/env bash
# Train ResNet-20 and ResNet-56 on CIFAR-10 with the paper's recipe (configs/pretrain_resnet.yaml:
# 200 epochs, SGD 0.1, x0.1 at 100/150) -> results/cifar10/checkpoints/<arch>/model.pt.
# Resumable from last.pt. Extra arguments are passed on, e.g. --max-epochs-this-run 10.
set -euo pipefail
cd "$(dirname "$0")/../.."
for arch in resnet20 resnet56; do
  "${PYTHON:-python3}" scripts/cifar10/pretrain_resnet.py --arch "$arch" --dataset cifar10 "$@"
done
