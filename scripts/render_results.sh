#!/usr/bin/env bash
# Regenerate every committed figure and table from the stored JSON (nothing is recomputed):
# the sweep figures/tables under results/<dataset>/<model>/ and results/quickstart/ (settings:
# configs/render_results.yaml), the benchmark table, the SVD-vs-activation-aware, speed and latency
# figures and tables, then the README's quoted tables. Extra arguments go to render_results.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" scripts/render_results.py --config configs/render_results.yaml "$@"
"$PY" -c "from balf_paper.experiments.readme import sync_readme; print('README tables updated:', sync_readme('README.md') or 'none')"
