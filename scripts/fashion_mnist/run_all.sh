#!/usr/bin/env bash
# The full offline reproduction on Fashion-MNIST, end to end and resumable (rerun to continue):
# pretraining, the six-mode sweeps, calibration-size and allocator-iteration sweeps,
# Fashion-MNIST-C and the corruption sweep, the SVD-vs-activation-aware figure, then every plot/table.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
bash scripts/install.sh
bash scripts/fashion_mnist/get_data.sh
bash scripts/fashion_mnist/pretrain.sh
bash scripts/fashion_mnist/factorize_sweep.sh
bash scripts/fashion_mnist/calib_size_sweep.sh
bash scripts/fashion_mnist/n_iters_sweep.sh
bash scripts/fashion_mnist/make_corrupted.sh
bash scripts/fashion_mnist/corrupted_sweep.sh
"$PY" scripts/compare_svd_vs_actaware.py --source checkpoint --dataset fashion-mnist --model resnet20
bash scripts/render_results.sh
