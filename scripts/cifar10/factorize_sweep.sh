#!/usr/bin/env bash
# Experiment 1 on CIFAR-10: the six modes, then Model Folding (AR, R), for ResNet-20 and ResNet-56
# (configs/<dataset>_factorize_sweep.yaml). Needs the trained models (scripts/cifar10/pretrain_resnet.sh).
# Resumable. Extra arguments are passed on, e.g. --dataset cifar10-jpeg for CIFAR-10 (JPEG release).
#   MODELS="resnet20a resnet56a" FOLDING=0 bash scripts/cifar10/factorize_sweep.sh --dataset cifar10-jpeg
# sweeps the third-party option-A checkpoints (Model Folding does not support option-A shortcuts).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
for model in ${MODELS:-resnet20 resnet56}; do
  "$PY" -m balf_paper.experiments factorize --dataset cifar10 --model "$model" "$@"
  if [ "${FOLDING:-1}" = 1 ]; then
    "$PY" -m balf_paper.experiments factorize --dataset cifar10 --model "$model" --modes folding_ar folding_r "$@"
  fi
done
