#!/usr/bin/env bash
# Install what is missing, then lint and run the test suite.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || exit 1
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m ruff check lib scripts tests || exit 1
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # no busy-waiting threads on a shared CPU
"$PYTHON" -m pytest -q "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "no tests were collected" >&2
    exit 1
fi
exit "$status"
