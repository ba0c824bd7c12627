#!/usr/bin/env bash
# Pretrain ResNet-20 and ResNet-56 on Fashion-MNIST (the offline stand-in for CIFAR-10).
# About 90 s per ResNet-20 epoch and 220 s per ResNet-56 epoch on 2 idle CPU cores.
# Resumable: every epoch is checkpointed to <out-dir>/last.pt; rerun this script to continue.
# Extra arguments are passed on, e.g. `bash scripts/fashion_mnist/pretrain.sh --max-epochs-this-run 10`.
set -euo pipefail
# Passive OpenMP waiting: on a shared, busy 2-core machine spinning threads made epochs 3-10x slower.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('balf') is None)" \
  || pip install --no-deps -e .

# ResNet-20: 30 epochs; ResNet-56: 20 epochs (3x the cost per epoch; the committed run did its
# first 4 epochs under a 30-epoch schedule and was then shortened to 20, see its command.txt).
for spec in resnet20:30 resnet56:20; do
  arch="${spec%%:*}"
  "${PYTHON:-python3}" scripts/cifar10/pretrain_resnet.py --arch "$arch" --dataset fashion-mnist \
    --epochs "${spec##*:}" --schedule cosine --lr 0.1 --momentum 0.9 --nesterov --weight-decay 5e-4 \
    --batch-size 128 --threads 2 --seed 0 \
    --out-dir "results/fashion-mnist/checkpoints/$arch" "$@"
done
