#!/usr/bin/env bash
# Build datasets/imagenet-calib/ from the official ILSVRC2012 archives (settings: configs/imagenet_data.yaml).
# Extra arguments are passed on, e.g. --train-tar /data/ILSVRC2012_img_train.tar --size 8192.
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" scripts/imagenet/extract_calib.py --config configs/imagenet_data.yaml "$@"
