#!/usr/bin/env bash
# Scale benchmark (issue 22): Llama-style random-weight models, whole-model vs block-by-block
# compression in place, peak memory and time -> results/benchmarks/block_scale.{json,md}.
# Sizes are HIDDENxBLOCKS[:CALIBRATION WINDOWS of --calib-len tokens]; on the 2-core CPU shared with
# other jobs the windows shrink with the size (the issue's setting is 32 × 512 at every size).
# Needs: pip install transformers. Extra arguments are passed on (e.g. --sizes 2048x8:32).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
"$PY" scripts/language/measure_scale.py --sizes 512x4:32 1024x4:16 2048x4:8 \
  --calib-len 512 --batch-size 2 --ratio 0.6 --threads 1 "$@"
