"""Compressed Hugging Face models through transformers' own ``save_pretrained``/``from_pretrained``.

transformers rebuilds models whose layers differ from the architecture's through one extension
point: a quantization config class and a quantizer, registered at run time under a
``quant_method`` name (``transformers.quantizers.auto``). balf registers ``"balf"``:

* :class:`BALFQuantizationConfig` is what ``config.json`` holds under ``quantization_config``:
  the factorization spec of :func:`balf.model_spec` (each factorized layer's name, kind, rank and
  dense hyper-parameters).
* :class:`BALFHfQuantizer` is what ``from_pretrained`` runs. Before the weights are read it
  replaces, on the meta device, every layer the spec names by an empty factorized layer
  (:func:`balf.apply_spec`), so ``model.safetensors``' factors load by name; while
  ``model.save_pretrained`` runs it refreshes the spec from the model and adds the guard tensors.

A compressed transformers model (from :func:`balf.compress`, :func:`balf.load` or
``from_pretrained`` of such a folder) carries ``model.config.quantization_config`` and
``model.hf_quantizer`` (:func:`mark_compressed`), so that its own ``save_pretrained`` writes::

    config.json              the model's config with quantization_config = {"quant_method": "balf",
                             "spec": {...}}
    generation_config.json   when the model can generate
    model.safetensors        every tensor of the state dict, plus one guard tensor per
                             factorized layer (below); sharded with an index when large

**Loading without balf.** transformers does not know ``"balf"``: it logs "Unknown quantization
type, got balf" and would build the dense architecture, initialising every factorized layer at
random. To stop that, the file also holds, under each factorized layer's *dense* weight name
(``...q_proj.weight``), a one-element ``uint8`` guard tensor. Its shape differs from the dense
weight's, so transformers' size check raises ``RuntimeError`` instead of loading (unless the
caller passes ``ignore_mismatched_sizes=True``). With balf imported the guards are ignored.

The factorized model is not quantized: after loading ``model.is_quantized`` is ``False`` and
``config._is_quantized`` is not set, so ``.half()``, ``.to(dtype)`` and training work as on any
model. This module imports transformers; :mod:`balf.io.hf_hook` imports it when transformers'
quantizer registry loads (``import balf`` alone never imports transformers).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from transformers.quantizers.auto import (
    AUTO_QUANTIZATION_CONFIG_MAPPING,
    AUTO_QUANTIZER_MAPPING,
    register_quantization_config,
    register_quantizer,
)
from transformers.quantizers.base import HfQuantizer
from transformers.utils.quantization_config import QuantizationConfigMixin

from balf.errors import BALFError
from balf.io.serialization import SaveFormatError, apply_spec, model_spec
from balf.layers.kind import kind_of_lowrank

__all__ = [
    "GUARD_DTYPE",
    "QUANT_METHOD",
    "BALFHfQuantizer",
    "BALFQuantizationConfig",
    "guard_names",
    "mark_compressed",
    "register",
]

log = logging.getLogger(__name__)

QUANT_METHOD = "balf"
"""The ``quant_method`` name in ``config.json``."""
GUARD_DTYPE = torch.uint8
"""dtype of the guard tensors (not a float: never cast, never mistaken for a weight)."""


class BALFQuantizationConfig(QuantizationConfigMixin):
    """``config.quantization_config`` of a balf-compressed model: its factorization spec.

    Args:
        spec: a :func:`balf.model_spec` dict (``{"format", "format_version", "library_version",
            "layers": [{"name", "kind", "rank", "dense"}, ...], "aliases"}``).
        quant_method: always ``"balf"`` (present in ``config.json``; checked).

    Raises:
        SaveFormatError: ``spec`` is missing or not a balf spec.

    Example:
        >>> small, _ = balf.compress(model, batches, balf.BALFConfig(0.6))
        >>> small.config.quantization_config.spec["layers"][0]["rank"]
        10
    """

    def __init__(self, spec: Mapping[str, Any] | None = None, quant_method: str = QUANT_METHOD,
                 **unknown: Any) -> None:  # fmt: skip
        if quant_method != QUANT_METHOD:
            raise SaveFormatError(
                f"BALFQuantizationConfig got quant_method={quant_method!r}, expected "
                f"{QUANT_METHOD!r}; the config.json was edited: save the model again"
            )
        if not isinstance(spec, Mapping) or not isinstance(spec.get("layers"), list):
            raise SaveFormatError(
                "config.json's quantization_config (quant_method 'balf') has no factorization "
                "spec ('spec' with a 'layers' list); the file was edited or damaged: save the "
                "model again with model.save_pretrained or balf.save_pretrained"
            )
        if unknown:
            log.info("ignoring unknown keys of the balf quantization_config: %s", sorted(unknown))
        self.quant_method = QUANT_METHOD
        self.spec = copy.deepcopy(dict(spec))

    @property
    def ranks(self) -> dict[str, int]:
        """``{layer name: rank}`` of every factorized layer."""
        return {entry["name"]: entry["rank"] for entry in self.spec["layers"]}


def guard_names(spec: Mapping[str, Any], state: Mapping[str, Tensor]) -> list[str]:
    """The dense weight names (``<layer>.weight``) of the factorized layers not in ``state``.

    Args:
        spec: a :func:`balf.model_spec` dict.
        state: the compressed model's state dict (only its keys are read).
    """
    names = [f"{entry['name']}.weight" if entry["name"] else "weight" for entry in spec["layers"]]
    return [n for n in names if n not in state]


def _guard() -> Tensor:
    """A fresh one-element tensor (its own storage: safetensors refuses shared ones)."""
    return torch.zeros(1, dtype=GUARD_DTYPE)


def _spec_for(model: nn.Module, spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with its layer names as ``model`` has them.

    transformers loads a head model's checkpoint into the base model (``AutoModel`` on a
    ``LlamaForCausalLM`` folder: ``model.layers.0…`` is ``layers.0…``) and the reverse; the
    names lose or gain ``base_model_prefix`` as the checkpoint's keys do. Layers this model does
    not have (the ``lm_head`` of a base model) are left out: their tensors are unexpected keys,
    as for any dense head left out.
    """
    names = {name for name, _ in model.named_modules()}
    prefix = getattr(model, "base_model_prefix", "") or ""
    layers = []
    for entry in spec["layers"]:
        name = entry["name"]
        candidates = [name]
        if prefix:
            candidates += [name.removeprefix(prefix + "."), f"{prefix}.{name}"]
        found = next((c for c in candidates if c in names), None)
        if found is None:
            log.info("layer %r of the saved model is not in %s: left out", name,
                     type(model).__name__)  # fmt: skip
            continue
        layers.append({**entry, "name": found})
    return {**spec, "layers": layers}


class _InitializedView(nn.Module):
    """Stands in for a factorized layer while transformers initialises the layer's parent.

    Some models' ``_init_weights`` reach into a child layer (GPT-2 rescales
    ``attention.c_proj.weight``); a factorized layer has no ``weight``. The view has
    ``weight``/``bias`` that transformers' init functions skip (marked initialised, on the meta
    device), so the parent's other tensors are initialised as usual and the loaded factors are
    left alone.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.weight = self._initialized()
        has_bias = any(name.endswith("bias") for name, _ in layer.named_parameters())
        self.bias = self._initialized() if has_bias else None

    @staticmethod
    def _initialized() -> Tensor:
        tensor = torch.empty(0, device="meta")
        tensor._is_hf_initialized = True
        return tensor


@contextlib.contextmanager
def _factorized_children_as_views(module: nn.Module):
    """Replace ``module``'s factorized children by :class:`_InitializedView` for the block."""
    swapped = {n: c for n, c in module.named_children() if kind_of_lowrank(c) is not None}
    try:
        for name, child in swapped.items():
            module._modules[name] = _InitializedView(child)
        yield
    finally:
        module._modules.update(swapped)


def _guard_initialisation(model: nn.Module) -> None:
    """Let transformers' ``_init_weights`` run on the parents of factorized layers (see
    :class:`_InitializedView`); undone by :func:`_unguard_initialisation`."""
    parents = {id(m) for m in model.modules() if any(
        kind_of_lowrank(c) is not None for c in m.children())}  # fmt: skip
    for sub in model.modules():
        if not hasattr(sub, "_init_weights") or "_init_weights" in vars(sub):
            continue
        original = sub._init_weights

        def init_weights(module: nn.Module, _original=original) -> None:
            if id(module) not in parents:
                return _original(module)
            with _factorized_children_as_views(module):
                return _original(module)

        sub._init_weights = init_weights  # an instance attribute: the class is untouched


def _unguard_initialisation(model: nn.Module) -> None:
    for sub in model.modules():
        vars(sub).pop("_init_weights", None)


class BALFHfQuantizer(HfQuantizer):
    """Rebuilds a balf-compressed model in ``from_pretrained`` and saves it in ``save_pretrained``.

    Registered under ``quant_method="balf"``; transformers makes one from the folder's
    :class:`BALFQuantizationConfig`. It only loads factorized checkpoints: a dense checkpoint is
    compressed with :func:`balf.compress`, which needs calibration data.
    """

    requires_calibration = True  # only pre-factorized checkpoints (pre_quantized=True)

    def validate_environment(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to check: the factorized layers are plain torch modules on any device."""

    def _process_model_before_weight_loading(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        """Install empty factorized layers (meta device) and ignore the guard tensors."""
        spec = _spec_for(model, self.quantization_config.spec)
        apply_spec(model, spec)
        guards = {r"(^|\.)" + re.escape(n) + "$" for n in guard_names(spec, model.state_dict())}
        ignored = set(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ())
        model._keys_to_ignore_on_load_unexpected = ignored | guards
        _guard_initialisation(model)
        return model

    def _process_model_after_weight_loading(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        _unguard_initialisation(model)
        return model

    def preprocess_model(self, model: nn.Module, dtype: torch.dtype | None = None,
                         **kwargs: Any) -> None:  # fmt: skip
        """transformers' preparation, but the model is not marked quantized (it is not)."""
        super().preprocess_model(model, dtype=dtype, **kwargs)
        model.is_quantized = False

    def postprocess_model(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        """Keep the spec on the config; unlike quantizers, leave ``config._is_quantized`` unset."""
        model.config.quantization_config = self.quantization_config
        return self._process_model_after_weight_loading(model, **kwargs)

    def is_serializable(self) -> bool:
        """``save_pretrained`` may write the model (see :meth:`get_state_dict_and_metadata`)."""
        return True

    @property
    def is_trainable(self) -> bool:
        """The factors are ordinary float parameters: training and fine-tuning work."""
        return True

    def get_state_dict_and_metadata(self, model: nn.Module) -> tuple[dict[str, Tensor], dict]:
        """What ``model.save_pretrained`` writes: the state dict plus the guard tensors.

        Also refreshes the spec in ``model.config.quantization_config`` (written after this).
        """
        spec = model_spec(model)
        self.quantization_config.spec = spec
        model.config.quantization_config = self.quantization_config
        state = model.state_dict()
        for name in guard_names(spec, state):
            state[name] = _guard()
        return state, {}

    def _dequantize(self, model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
        raise BALFError(
            "a balf-compressed model has no dense form to go back to (its factors are the "
            "weights); load the original checkpoint for the dense model"
        )


def mark_compressed(model: nn.Module) -> bool:
    """Attach :class:`BALFQuantizationConfig` and :class:`BALFHfQuantizer` to a compressed
    transformers model, so that ``model.save_pretrained`` writes a folder ``from_pretrained``
    rebuilds. Called by :func:`balf.compress` and :func:`balf.load`; idempotent.

    Args:
        model: a ``transformers.PreTrainedModel`` with factorized layers (modified in place:
            ``model.config.quantization_config`` and ``model.hf_quantizer``).

    Returns:
        ``True`` if marked; ``False`` when the model has no factorized layer, or already carries
        another method's quantizer (logged: such a model cannot be saved this way).
    """
    register()
    spec = model_spec(model)
    if not spec["layers"]:
        return False
    current = getattr(model, "hf_quantizer", None)
    if current is not None and not isinstance(current, BALFHfQuantizer):
        method = getattr(current.quantization_config, "quant_method", "?")
        log.warning(
            "%s is quantized with %s and factorized by balf: model.save_pretrained cannot "
            "record both; save it with balf.save(model, path)", type(model).__name__, method
        )  # fmt: skip
        return False
    if isinstance(current, BALFHfQuantizer):
        current.quantization_config.spec = spec
        model.config.quantization_config = current.quantization_config
        return True
    config = BALFQuantizationConfig(spec)
    model.config.quantization_config = config
    model.hf_quantizer = BALFHfQuantizer(config, pre_quantized=True)
    return True


def register() -> None:
    """Register ``quant_method="balf"`` with transformers (once; done on import)."""
    if AUTO_QUANTIZER_MAPPING.get(QUANT_METHOD) is BALFHfQuantizer:
        return
    if QUANT_METHOD in AUTO_QUANTIZER_MAPPING or QUANT_METHOD in AUTO_QUANTIZATION_CONFIG_MAPPING:
        # another copy of this module (e.g. reloaded): replace its classes by these
        AUTO_QUANTIZER_MAPPING.pop(QUANT_METHOD, None)
        AUTO_QUANTIZATION_CONFIG_MAPPING.pop(QUANT_METHOD, None)
    register_quantization_config(QUANT_METHOD)(BALFQuantizationConfig)
    register_quantizer(QUANT_METHOD)(BALFHfQuantizer)
    log.debug("registered quant_method %r with transformers", QUANT_METHOD)


register()
