"""Compressed Hugging Face models as folders: the same folder as ``model.save_pretrained``.

:func:`save_pretrained` writes exactly what the compressed model's own ``save_pretrained`` writes
(:mod:`balf.io.hf_quantizer`)::

    config.json              the model's config; quantization_config = {"quant_method": "balf",
                             "spec": the factorization spec (layers, kinds, ranks)}
    generation_config.json   when the model can generate
    model.safetensors        the tensors, plus a guard tensor per factorized layer (so that
                             transformers without balf fails instead of loading random layers)

written into a temporary folder beside ``folder`` and moved in file by file (``config.json``
last), so an interrupted save never leaves new weights under an old config. :func:`load_pretrained`
reloads it with ``from_pretrained`` of the recorded class, which ``import balf`` taught to
rebuild the factorized layers; ``AutoModelForCausalLM.from_pretrained(folder)`` does the same.

Folders of balf 0.2 (``balf_model.safetensors`` + ``balf_spec.json``, no ``model.safetensors``)
still load with :func:`load_pretrained`: the architecture from ``config.json`` (parameters on the
meta device when ``accelerate`` is installed), the factorized layers and tensors by
:func:`balf.load`. ``transformers`` is imported only when these functions run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from balf.errors import BALFError
from balf.io.serialization import SaveFormatError, apply_spec, load

__all__ = ["LEGACY_SPEC_FILE", "LEGACY_WEIGHTS_FILE", "load_pretrained", "save_pretrained"]

log = logging.getLogger(__name__)

LEGACY_WEIGHTS_FILE = "balf_model.safetensors"
"""Weights of a balf 0.2 folder (read by :func:`load_pretrained`, no longer written)."""
LEGACY_SPEC_FILE = "balf_spec.json"
"""Spec of a balf 0.2 folder (read by :func:`load_pretrained`, no longer written)."""
_CONFIG = "config.json"
# weights files a new save replaces: those of an earlier save that the new one does not rewrite
# would be read instead of (or mixed with) the new ones
_WEIGHTS_PATTERNS = (
    "model*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    LEGACY_WEIGHTS_FILE,
    LEGACY_SPEC_FILE,
)


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise BALFError(
            "saving and loading Hugging Face folders needs transformers: pip install transformers"
        ) from exc
    return transformers


def save_pretrained(model: nn.Module, folder: str | Path) -> Path:
    """Write a compressed Hugging Face model as the folder its own ``save_pretrained`` writes.

    Equivalent to ``model.save_pretrained(folder)`` on a model from :func:`balf.compress` (which
    records the factorization in ``model.config.quantization_config``), and also right for a
    model whose layers were factorized by hand: the factorization is recorded first. The files
    are written into a temporary folder beside ``folder`` and moved in (``config.json`` last);
    weights files of an earlier save in ``folder`` are removed.

    Args:
        model: a ``transformers`` ``PreTrainedModel`` (e.g. from :func:`balf.compress`),
            factorized or not.
        folder: created if needed.

    Returns:
        ``folder``.

    Raises:
        BALFError: the model has no transformers ``config``, or it carries another method's
            quantizer (save it with :func:`balf.save`).

    Example:
        >>> small, report = balf.compress(model, batches, balf.BALFConfig(0.6))
        >>> balf.save_pretrained(small, "smollm-balf")     # = small.save_pretrained("smollm-balf")
        >>> again = balf.load_pretrained("smollm-balf")   # = AutoModelForCausalLM.from_pretrained
    """
    transformers = _transformers()
    if not isinstance(getattr(model, "config", None), transformers.PretrainedConfig):
        raise BALFError(
            f"{type(model).__name__} has no transformers config: save it with balf.save(model, "
            "path) and reload it with balf.load(path, architecture)"
        )
    from balf.io.hf_quantizer import BALFHfQuantizer, mark_compressed

    mark_compressed(model)
    current = getattr(model, "hf_quantizer", None)
    if current is not None and not isinstance(current, BALFHfQuantizer):
        raise BALFError(
            f"{type(model).__name__} carries the {current.quantization_config.quant_method!r} "
            "quantizer as well as factorized layers; save it with balf.save(model, path)"
        )
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.saving-"))
    try:
        model.save_pretrained(staging)
        _move_into(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("saved %s to %s", type(model).__name__, folder)
    return folder


def _move_into(staging: Path, folder: Path) -> None:
    """Move ``staging``'s files into ``folder``: config.json last, earlier weights removed."""
    folder.mkdir(exist_ok=True)
    new = {p.name for p in staging.iterdir()}
    for pattern in _WEIGHTS_PATTERNS:
        for stale in folder.glob(pattern):
            if stale.name not in new and stale.is_file():
                stale.unlink()
    for name in sorted(new, key=lambda n: n == _CONFIG):  # config.json last
        os.replace(staging / name, folder / name)


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / _CONFIG
    if not path.is_file():
        raise SaveFormatError(
            f"{folder} has no {_CONFIG}: it is not a Hugging Face folder (write one with "
            "balf.save_pretrained(model, folder) or model.save_pretrained(folder))"
        )
    return json.loads(path.read_text())


def _model_class(
    transformers, config: dict[str, Any], model_class, recorded: str | None, folder: Path
):
    """The class to build: ``model_class``, else the one recorded (``architectures``, or a
    balf 0.2 folder's ``balf_spec.json``); checked against the folder's config.

    Raises:
        TypeError: ``model_class`` is not a class.
        BALFError: the class does not build from this config (another model family; an Auto
            class with no model for it), or no class is recorded.
    """
    given = model_class is not None
    if not given:
        name = recorded or (config.get("architectures") or [None])[0]
        model_class = getattr(transformers, name, None) if name else None
        if model_class is None:
            raise BALFError(
                f"cannot tell the model class of {folder} (recorded: {name!r}); pass "
                "model_class=, e.g. transformers.AutoModelForCausalLM"
            )
    label = (
        f"model_class={getattr(model_class, '__name__', model_class)!r}"
        if given
        else f"the class recorded in {folder} ({model_class.__name__})"
    )
    if not isinstance(model_class, type):
        raise TypeError(
            f"{label} is not a class; pass a transformers model class or an Auto class "
            "(e.g. transformers.AutoModelForCausalLM)"
        )
    model_type = config.get("model_type")
    configs = transformers.CONFIG_MAPPING  # a lazy mapping: its .get() finds nothing
    config_class = configs[model_type] if model_type in configs else None
    mapping = getattr(model_class, "_model_mapping", None)  # an Auto class
    if mapping is not None and config_class is not None and config_class not in mapping:
        raise BALFError(
            f"{label} is an Auto class with no model for {config_class.__name__} (model_type "
            f"{model_type!r} in {folder}/config.json); pass an Auto class for this task, or "
            "leave model_class out"
        )
    expected = getattr(model_class, "config_class", None)
    if mapping is None and isinstance(expected, type) and config_class is not None:
        if not issubclass(config_class, expected):
            raise BALFError(
                f"{label} builds from a {expected.__name__}, but {folder}/config.json holds a "
                f"{config_class.__name__} (model_type {model_type!r}): it would load a model "
                "of another family with random weights; pass the class of "
                f"config.json's architectures ({config.get('architectures')}) or leave "
                "model_class out"
            )
    return model_class


def _structure_on_meta(transformers, folder: Path, cls: type, config: dict[str, Any]) -> nn.Module:
    """The architecture on the meta device with the folder's factorized layers (its spec), in
    the config's dtype: ``device="meta"`` reads no tensor (``from_pretrained`` refuses meta)."""
    hf_config = transformers.AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = cls.from_config(hf_config) if hasattr(cls, "from_config") else cls(hf_config)
    dtype = getattr(hf_config, "dtype", None)
    if isinstance(dtype, torch.dtype):
        model = model.to(dtype)
    quantization = config.get("quantization_config")
    if isinstance(quantization, dict) and quantization.get("quant_method") == "balf":
        model = apply_spec(model, quantization.get("spec", {}), device="meta")
    return model.eval()


def load_pretrained(
    folder: str | Path,
    model_class: type[nn.Module] | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Rebuild a compressed model from a folder :func:`save_pretrained` or its own
    ``save_pretrained`` wrote (or a balf 0.2 folder), with its factorized layers and ranks.

    Args:
        folder: the saved folder.
        model_class: the transformers class (or auto class) to build (default: the one in
            ``config.json``'s ``architectures``).
        device: where the tensors go (default: the CPU); ``"meta"`` gives the structure alone
            (the architecture with its factorized layers, every tensor on the meta device in
            the config's dtype; nothing read).

    Returns:
        The model in eval mode. For a current folder this is
        ``model_class.from_pretrained(folder, device_map=device)``.

    A folder without factorized layers (a plain Hugging Face folder) loads as
    ``from_pretrained`` loads it.

    Raises:
        SaveFormatError: the folder has no ``config.json``, or its spec or weights do not fit
            the architecture.
        BALFError: ``model_class`` does not build from the folder's config (a model of another
            family, an Auto class for another task).
        TypeError: ``model_class`` is not a class.

    Example:
        >>> again = balf.load_pretrained("smollm-balf", device="cuda")
    """
    folder = Path(folder)
    config = _read_config(folder)
    transformers = _transformers()
    quantization = config.get("quantization_config")
    is_balf = isinstance(quantization, dict) and quantization.get("quant_method") == "balf"
    if not is_balf and (folder / LEGACY_WEIGHTS_FILE).is_file():
        return _load_legacy(transformers, folder, model_class, device)
    import balf.io.hf_quantizer  # noqa: F401 (registers "balf" with transformers)

    if not is_balf:
        log.info("%s has no factorized layers: loading it as a plain Hugging Face folder", folder)
    cls = _model_class(transformers, config, model_class, None, folder)
    device_map = None if device is None else torch.device(device)
    if device_map is not None and device_map.type == "meta":
        return _structure_on_meta(transformers, folder, cls, config)
    return cls.from_pretrained(folder, device_map=device_map).eval()


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


def _load_legacy(transformers, folder: Path, model_class, device) -> nn.Module:
    """A balf 0.2 folder: config.json, balf_spec.json, balf_model.safetensors."""
    recorded = None
    if (folder / LEGACY_SPEC_FILE).is_file():
        recorded = json.loads((folder / LEGACY_SPEC_FILE).read_text()).get("model_class")
    config = transformers.AutoConfig.from_pretrained(folder)
    cls = _model_class(transformers, config.to_dict(), model_class, recorded, folder)
    with _empty_parameters():
        model = cls(config) if not hasattr(cls, "from_config") else cls.from_config(config)
    model = load(folder / LEGACY_WEIGHTS_FILE, model, device=device or "cpu")
    tie = getattr(model, "tie_weights", None)
    if callable(tie):
        tie()
    return model.eval()
