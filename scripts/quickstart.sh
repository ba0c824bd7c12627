#!/usr/bin/env bash
# The README's main command: install, obtain Fashion-MNIST, run BALF vs the baselines on the
# committed Fashion-MNIST ResNet-20, write JSON, plots and a LaTeX table, print a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
bash scripts/install.sh
bash scripts/fashion_mnist/get_data.sh
"$PYTHON" scripts/fashion_mnist/quickstart.py "$@"
