#!/usr/bin/env bash
# Experiment 4 on Fashion-MNIST-C (made by make_corrupted.sh): compressed ResNet-20 under corruption.
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" -m balf_paper.experiments corrupted --dataset fashion-mnist --model resnet20 "$@"
