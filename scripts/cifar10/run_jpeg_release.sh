#!/usr/bin/env bash
# The CIFAR-10 study on CIFAR-10 (JPEG release), end to end and resumable (rerun to continue):
# data, pretraining (ResNet-20 30 epochs, ResNet-56 20 epochs on 2 CPU cores), the six-mode and
# Model Folding sweeps of both trained models, the six-mode sweeps of the third-party option-A
# ResNet-20/56 as published, calibration-size and iteration sweeps, CIFAR-10-C of this release and
# the corruption sweep, then every plot and table. Results: results/cifar10-jpeg/.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
bash scripts/install.sh
bash scripts/cifar10/get_data.sh "$@"
bash scripts/cifar10/pretrain_resnet.sh --dataset cifar10-jpeg
bash scripts/cifar10/factorize_sweep.sh --dataset cifar10-jpeg
MODELS="resnet20a resnet56a" FOLDING=0 bash scripts/cifar10/factorize_sweep.sh --dataset cifar10-jpeg
bash scripts/cifar10/calib_size_sweep.sh --dataset cifar10-jpeg
bash scripts/cifar10/n_iters_sweep.sh --dataset cifar10-jpeg
bash scripts/cifar10/make_corrupted.sh
bash scripts/cifar10/corrupted_sweep.sh --dataset cifar10-jpeg
bash scripts/render_results.sh
