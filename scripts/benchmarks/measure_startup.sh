#!/usr/bin/env bash
# Start-up cost: import balf / balf_paper and each sweep script's --help, wall and CPU time
# -> results/benchmarks/startup.json. Extra arguments are passed on (e.g. --repeats 9).
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" scripts/benchmarks/measure_startup.py "$@"
