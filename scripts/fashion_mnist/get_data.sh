#!/usr/bin/env bash
# Make Fashion-MNIST available: Debian's dataset-fashion-mnist package where apt is usable,
# torchvision's download otherwise (done by the loader); a clear message if neither works.
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
found() { "$PYTHON" -c "from balf_paper.data.fashion_mnist import find_fashion_mnist as f; f(download=False)" 2>/dev/null; }
found && exit 0
if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
    echo "[data] installing the Debian package dataset-fashion-mnist"
    { $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
      || { $SUDO apt-get update -qq >/dev/null 2>&1 \
           && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }; } || true
    found && exit 0
fi
echo "[data] trying torchvision's download into datasets/"
"$PYTHON" -c "from balf_paper.data.fashion_mnist import find_fashion_mnist as f; print(f(download=True))"
