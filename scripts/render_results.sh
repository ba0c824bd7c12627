#!/usr/bin/env bash
# Regenerate every figure and table under results/ from the stored results.json files
# (settings: configs/render_results.yaml). Extra arguments are passed on, e.g. --datasets cifar10.
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python3}" scripts/render_results.py --config configs/render_results.yaml "$@"
