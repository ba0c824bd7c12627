#!/usr/bin/env bash
# Install the requirements and balf (editable) into the current Python, only if something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" - <<'PY' 2>/dev/null
import importlib, sys
from importlib.metadata import version
for mod in ("torch", "torchvision", "timm", "numpy", "matplotlib", "pandas", "tqdm", "yaml",
            "pytest", "ruff", "imagecorruptions", "safetensors", "onnx", "onnxruntime",
            "onnxscript", "balf"):
    importlib.import_module(mod)
assert version("torch").split("+")[0] == "2.14.1", version("torch")
import balf, pathlib
assert pathlib.Path(balf.__file__).resolve().is_relative_to(pathlib.Path("lib").resolve())
PY
then
    echo "[install] installing requirements and balf (editable)"
    "$PYTHON" -m pip install -q -r requirements.txt
    "$PYTHON" -m pip install -q --no-deps -e .
    # the [export] extra of pyproject.toml (ONNX export tests); keep the two lists equal
    "$PYTHON" -m pip install -q onnx onnxruntime onnxscript
fi
