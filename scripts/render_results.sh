#!/usr/bin/env bash
# Regenerate every committed figure and table from the stored JSON (nothing is recomputed):
# the sweep figures/tables under results/<dataset>/<model>/ and results/quickstart/ (settings:
# configs/render_results.yaml), the benchmark table, the SVD-vs-activation-aware, speed and latency
# figures and tables, then the tables quoted in README.md, docs/*.md and results/**/README.md.
# Extra arguments go to render_results.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" scripts/render_results.py --config configs/render_results.yaml "$@"
"$PY" -m balf_paper.experiments.render.objectives results
"$PY" -m balf_paper.experiments.render.readme .
