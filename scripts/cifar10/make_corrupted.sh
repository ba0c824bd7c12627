#!/usr/bin/env bash
# Build datasets/cifar10-jpeg-c/: CIFAR-10-C of the JPEG release, made here with the Fashion-MNIST-C code
# (settings: configs/cifar10-jpeg_make_corrupted.yaml). Needs `bash scripts/cifar10/get_data.sh` first.
# Resumable: rerun to continue after an interruption. Extra arguments are passed on, e.g. --subset 2000.
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" scripts/cifar10/make_corrupted.py "$@"
