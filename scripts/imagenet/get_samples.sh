#!/usr/bin/env bash
# Lay the ImageNet samples (1,300 val / 1,000 train images) out as ImageNet folders:
#   bash scripts/imagenet/get_samples.sh [SHARED_DIR] [DEST]
# SHARED_DIR defaults to ../shared/data/imagenet-samples, DEST to datasets/imagenet-samples
# (-> DEST/imagenet-val/<wnid>/, DEST/imagenet-calib/<wnid>/). Rerunning does nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" scripts/imagenet/get_samples.py "$@"
