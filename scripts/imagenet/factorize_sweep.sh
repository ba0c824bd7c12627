#!/usr/bin/env bash
# Experiment 1 on ImageNet: the six modes for every model (configs/imagenet_factorize_sweep.yaml).
# Resumable. Extra arguments are passed on, e.g. --modes flops_auto --eval-size 5000.
set -euo pipefail
cd "$(dirname "$0")/../.."
for model in resnet18 resnet50 mobilenet_v2 resnext50_32x4d resnext101_32x8d vit_b_16 deit_b_16; do
  "${PYTHON:-python3}" -m balf_paper.experiments factorize --dataset imagenet --model "$model" "$@"
done
