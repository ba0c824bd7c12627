"""Compressed Hugging Face models as folders: config + spec + safetensors, reloaded by one call.

:func:`save_pretrained` writes a folder::

    config.json                 the model's transformers config (``architectures`` set)
    generation_config.json      when the model has one
    balf_spec.json              the factorization spec (also in the weights' header), the class
    balf_model.safetensors      every tensor, written by :func:`balf.save`

and :func:`load_pretrained` rebuilds the model from it: the architecture from ``config.json``
(parameters on the meta device when ``accelerate`` is installed, so nothing is initialised
twice; the non-persistent buffers such as rotary frequencies are computed as usual), the
factorized layers from the spec, the tensors from the file.

The weights are deliberately *not* called ``model.safetensors``: ``from_pretrained`` on the
folder then fails with ``OSError`` (no weights file) instead of loading a dense model whose
factorized layers it would silently initialise at random. ``transformers`` is imported only
when these functions run.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from balf.errors import BALFError
from balf.io.atomic import atomic_write_bytes
from balf.io.serialization import SaveFormatError, load, model_spec, save

__all__ = ["SPEC_FILE", "WEIGHTS_FILE", "load_pretrained", "save_pretrained"]

log = logging.getLogger(__name__)

WEIGHTS_FILE = "balf_model.safetensors"
SPEC_FILE = "balf_spec.json"
# files that would make transformers' from_pretrained load (stale, dense) weights
_HF_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise BALFError(
            "saving and loading Hugging Face folders needs transformers: pip install transformers"
        ) from exc
    return transformers


def _write_json(obj: Any, path: Path) -> None:
    atomic_write_bytes((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), path)


def save_pretrained(model: nn.Module, folder: str | Path) -> Path:
    """Write a (compressed) Hugging Face model as a folder :func:`load_pretrained` reloads.

    Args:
        model: a ``transformers`` ``PreTrainedModel`` (e.g. from :func:`balf.compress`).
        folder: created if needed; must not hold Hugging Face weights files.

    Returns:
        ``folder``.

    Raises:
        BALFError: the model has no transformers ``config``, or the folder holds
            ``model.safetensors``/``pytorch_model.bin`` files (``from_pretrained`` would load
            those instead of failing).

    Example:
        >>> small, report = balf.compress(model, batches, balf.BALFConfig(0.6))
        >>> balf.save_pretrained(small, "smollm-balf")
        >>> again = balf.load_pretrained("smollm-balf")
    """
    transformers = _transformers()
    config = getattr(model, "config", None)
    if not isinstance(config, transformers.PretrainedConfig):
        raise BALFError(
            f"{type(model).__name__} has no transformers config: save it with balf.save(model, "
            "path) and reload it with balf.load(path, architecture)"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stale = [name for name in _HF_WEIGHTS if (folder / name).exists()]
    if stale:
        raise BALFError(
            f"{folder} holds Hugging Face weights ({', '.join(stale)}) that from_pretrained would "
            "load instead of the compressed model; save into an empty folder"
        )
    config = copy.deepcopy(config)
    config.architectures = [type(model).__name__]
    _write_json(json.loads(config.to_json_string(use_diff=False)), folder / "config.json")
    generation = getattr(model, "generation_config", None)
    if generation is not None and hasattr(generation, "to_dict"):
        _write_json(generation.to_dict(), folder / "generation_config.json")
    spec = model_spec(model)
    _write_json(
        {
            "model_class": type(model).__name__,
            "transformers_version": transformers.__version__,
            "weights": WEIGHTS_FILE,
            "spec": spec,
        },
        folder / SPEC_FILE,
    )
    save(model, folder / WEIGHTS_FILE)
    log.info("saved %s with %d factorized layers to %s", type(model).__name__,
             len(spec["layers"]), folder)  # fmt: skip
    return folder


def _model_class(transformers, config, model_class, recorded: str | None) -> type[nn.Module]:
    if model_class is not None:
        return model_class
    name = recorded or (config.architectures or [None])[0]
    cls = getattr(transformers, name, None) if name else None
    if cls is None:
        raise BALFError(
            f"cannot tell the model class of this folder (recorded: {name!r}); pass "
            "model_class=, e.g. transformers.AutoModelForCausalLM's class for this config"
        )
    return cls


@contextlib.contextmanager
def _empty_parameters():
    """Parameters built on the meta device, buffers as usual (``accelerate``), when available."""
    try:
        from accelerate import init_empty_weights
    except ImportError:
        log.info("accelerate is not installed: building the architecture with random weights")
        yield
        return
    with init_empty_weights(include_buffers=False):
        yield


def load_pretrained(
    folder: str | Path,
    model_class: type[nn.Module] | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Rebuild a model :func:`save_pretrained` wrote, with its factorized layers and ranks.

    Args:
        folder: the saved folder.
        model_class: the transformers class to build (default: the one recorded).
        device: where the tensors go (default: the CPU).

    Returns:
        The model in eval mode, every tensor from ``balf_model.safetensors``.

    Raises:
        SaveFormatError: the folder is not a balf save (e.g. a plain Hugging Face folder), or
            its weights do not fit the architecture.
    """
    folder = Path(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise SaveFormatError(
            f"{folder} has no {WEIGHTS_FILE}: it is not a folder written by balf.save_pretrained "
            "(a plain Hugging Face folder loads with from_pretrained)"
        )
    transformers = _transformers()
    recorded = None
    if (folder / SPEC_FILE).is_file():
        recorded = json.loads((folder / SPEC_FILE).read_text()).get("model_class")
    config = transformers.AutoConfig.from_pretrained(folder)
    cls = _model_class(transformers, config, model_class, recorded)
    with _empty_parameters():
        model = cls(config)
    model = load(weights, model, device=device or "cpu")
    tie = getattr(model, "tie_weights", None)
    if callable(tie):
        tie()
    return model.eval()
