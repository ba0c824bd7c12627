#!/usr/bin/env bash
# The paper's headline: ResNeXt-50 (32x4d) and ResNeXt-101 (32x8d), all six modes, then plots/tables.
# Resumable (each sweep skips the points already in its results.json). Extra arguments go to the sweeps.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
MODES=(flops_auto params_auto energy energy_act_aware uniform uniform_act_aware)
"$PY" -m balf_paper.experiments factorize --dataset imagenet --model resnext50_32x4d --modes "${MODES[@]}" "$@"
"$PY" -m balf_paper.experiments factorize --dataset imagenet --model resnext101_32x8d --modes "${MODES[@]}" "$@"
"$PY" scripts/render_results.py --datasets imagenet --models resnext50_32x4d resnext101_32x8d
