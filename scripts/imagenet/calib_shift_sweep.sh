#!/usr/bin/env bash
# Calibration under shift on ImageNet (configs/imagenet_calib_shift_sweep.yaml): flops_auto /
# params_auto at 0.3 ... 0.9, calibrated on corrupted copies of the calibration images (or on
# ImageNet-C with --imagenet-c-root, plus ImageNet-V2 with --imagenet-v2-root), evaluated on the
# clean validation images. Resumable. Extra arguments are passed on (e.g. --model).
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" -m balf_paper.experiments calib-shift --dataset imagenet "$@"
