#!/usr/bin/env bash
# Regenerate every committed figure and table from the stored JSON (nothing is recomputed):
# the sweep figures/tables under results/<dataset>/<model>/ and results/quickstart/ (settings:
# configs/render_results.yaml), the benchmark table, the SVD-vs-activation-aware and speed
# figures (--plot-only), then the README's quoted tables. Extra arguments go to render_results.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" scripts/render_results.py --config configs/render_results.yaml "$@"
for json in results/svd_vs_actaware/svd_vs_actaware_*.json; do
  [ -e "$json" ] || continue
  source="$(basename "$json" .json)"
  "$PY" scripts/compare_svd_vs_actaware.py --plot-only --source "${source#svd_vs_actaware_}"
done
for json in results/benchmarks/speed_*.json; do
  [ -e "$json" ] || continue
  device="$(basename "$json" .json)"
  "$PY" scripts/imagenet/measure_speed.py --plot-only --device "${device#speed_}"
done
"$PY" -c "from balf.experiments.readme import sync_readme; print('README tables updated:', sync_readme('README.md') or 'none')"
