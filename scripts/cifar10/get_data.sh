#!/usr/bin/env bash
# Make CIFAR-10 (JPEG release) available as datasets/cifar10-jpeg/{train,test}/<class>/*.jpg.
#   bash scripts/cifar10/get_data.sh [ARCHIVE_OR_FOLDER] [DEST]
# ARCHIVE_OR_FOLDER: cifar10-jpeg.tar.gz, or an extracted folder holding train/ and test/
# (default: ../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz, where the project's machines keep it).
# DEST defaults to datasets/cifar10-jpeg. Prints the folder to pass as --data-root.
# The original CIFAR-10 release (python pickles) is downloaded by torchvision where a network is
# available: torchvision.datasets.CIFAR10('datasets', download=True).
set -euo pipefail
cd "$(dirname "$0")/../.."
src="${1:-../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz}"
dest="${2:-datasets/cifar10-jpeg}"
complete() { [ -d "$1/train/truck" ] && [ -d "$1/test/airplane" ]; }
if complete "$dest"; then echo "[data] CIFAR-10 (JPEG release) already in $dest"; echo "$dest"; exit 0; fi
if [ -d "$src" ]; then
  complete "$src" || { echo "get_data.sh: $src does not hold train/<class>/ and test/<class>/ folders" >&2; exit 2; }
  echo "[data] using the extracted copy in $src"; echo "$src"; exit 0
fi
if [ ! -f "$src" ]; then
  echo "get_data.sh: $src not found. Pass the path of cifar10-jpeg.tar.gz (the JPEG release of" \
       "CIFAR-10, ImageFolder layout) or of an extracted folder holding train/ and test/." >&2
  exit 2
fi
tmp="$(mktemp -d "$(dirname "$dest")/.cifar10-jpeg.XXXXXX" 2>/dev/null || { mkdir -p "$(dirname "$dest")"; mktemp -d "$(dirname "$dest")/.cifar10-jpeg.XXXXXX"; })"
trap 'rm -rf "$tmp"' EXIT
echo "[data] extracting $src"
tar -xzf "$src" -C "$tmp"
inner="$(dirname "$(find "$tmp" -maxdepth 3 -type d -name train | head -n1)")"
complete "$inner" || { echo "get_data.sh: $src holds no train/<class>/ and test/<class>/ folders" >&2; exit 2; }
rm -rf "$dest"; mv "$inner" "$dest"
echo "[data] CIFAR-10 (JPEG release) extracted to $dest"
echo "$dest"
