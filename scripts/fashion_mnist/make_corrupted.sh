#!/usr/bin/env bash
# Build datasets/fashion-mnist-c/ (settings: configs/fashion-mnist_make_corrupted.yaml).
# Resumable: rerun to continue after an interruption. Extra arguments are passed on, e.g. --subset 2000.
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" scripts/fashion_mnist/make_corrupted.py "$@"
