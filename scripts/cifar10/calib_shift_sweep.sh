#!/usr/bin/env bash
# Calibration under shift (the paper's current robustness study): ResNet-20 compressed with
# flops_auto / params_auto at 0.3 ... 0.9, calibrated on each corrupted copy of the calibration
# subset (15 corruptions x 5 severities, cached in datasets/calib-shift) and on the clean one,
# evaluated on the clean test set (configs/<dataset>_calib_shift_sweep.yaml). Resumable.
# Extra arguments are passed on (e.g. --dataset cifar10-jpeg, --seeds 0 1 2, --corruptions fog).
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" -m balf_paper.experiments calib-shift --dataset cifar10 --model resnet20 "$@"
