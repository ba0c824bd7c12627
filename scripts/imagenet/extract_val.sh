#!/usr/bin/env bash
# Build datasets/imagenet-val/ from the official ILSVRC2012 archives (settings: configs/imagenet_data.yaml).
# Extra arguments are passed on, e.g. --val-tar /data/ILSVRC2012_img_val.tar.
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" scripts/imagenet/extract_val.py --config configs/imagenet_data.yaml "$@"
