"""Save and reload compressed models without pickle: safetensors weights plus a JSON spec.

:func:`save` writes one ``.safetensors`` file: every tensor of the model's ``state_dict`` and, in
the file's header metadata under ``"balf"``, a small JSON spec::

    {"format": "balf.factorized", "format_version": 1, "library_version": "0.2.0",
     "layers": [{"name": "layer1.0.conv1", "kind": "conv2d", "rank": 5,
                 "dense": {"in_channels": 16, "out_channels": 16, "kernel_size": [3, 3], ...}}],
     "aliases": {}}

:func:`load` takes the *uncompressed* architecture (a fresh instance, random or built on the meta
device), replaces every layer the spec names by an empty factorized layer of the recorded rank,
and loads the weights strictly. Nothing is unpickled: the file opens with
``safetensors.safe_open`` alone.

Layers are dispatched through the one registry of layer kinds (:mod:`balf.layers.kind`): a
dense layer's kind by its type, a saved layer's by the spec's ``"kind"`` name; the kind gives the
dense layer's hyper-parameters (``dense_spec``) and builds the empty replacement (``empty``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from balf.errors import BALFError
from balf.io.atomic import atomic_write_bytes
from balf.io.checksum import (
    ALGORITHM,
    spec_checksum,
    tensors_checksum,
    verify_checksum,
    verify_spec_checksum,
)
from balf.io.orphans import remove_save_orphans
from balf.io.sharing import module_names, retie, tied_tensors
from balf.io.spec_checks import check_aliases, check_layer_entry, check_rank, check_tied
from balf.layers.attention import prepare_replacement
from balf.layers.kind import kind_for, kind_named, kind_of_lowrank, layer_kinds

__all__ = [
    "FORMAT_VERSION",
    "SaveFormatError",
    "add_load_hook",
    "apply_spec",
    "load",
    "model_spec",
    "read_spec",
    "save",
    "spec_from_report",
]

log = logging.getLogger(__name__)

FORMAT = "balf.factorized"
FORMAT_VERSION = 1
"""Version of the on-disk layout; files with another major layout are refused by name."""
_READABLE_VERSIONS = (1,)
_METADATA_KEY = "balf"


class SaveFormatError(BALFError):
    """A saved file does not match the model or this library (names the layer and the fix)."""


_LOAD_HOOKS: list[Callable[[nn.Module], None]] = []


def add_load_hook(hook: Callable[[nn.Module], None]) -> None:
    """Call ``hook(model)`` on every model :func:`load` returns (once per hook).

    :mod:`balf.io.hf_hook` adds one that lets a loaded transformers model's ``save_pretrained``
    record its factorization (registered from above, so this module imports nothing of it).
    """
    if hook not in _LOAD_HOOKS:
        _LOAD_HOOKS.append(hook)


# -- the spec -----------------------------------------------------------------------------------


def _empty_spec() -> dict[str, Any]:
    from balf._version import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "layers": [],
        "aliases": {},
    }


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The spec of a compressed model: every registered low-rank layer, in model order.

    Returns:
        ``{"format", "format_version", "library_version", "layers": [{"name", "kind", "rank",
        "dense"}, ...], "aliases": {}}`` (JSON-serialisable).
    """
    spec = _empty_spec()
    for name, module in model.named_modules():
        kind = kind_of_lowrank(module)
        if kind is not None:
            spec["layers"].append({"name": name, **module.spec(), "kind": kind.name})
    return spec


def spec_from_report(report, model: nn.Module) -> dict[str, Any]:
    """The spec of the model :func:`balf.compress` made, from its report and the original model.

    Args:
        report: a :class:`balf.Report` (``report.ranks`` and which layers were factorized).
        model: the *uncompressed* model (for the dense layers' hyper-parameters).

    Raises:
        SaveFormatError: a layer of the report is not in ``model`` or is of another type.
    """
    modules = dict(model.named_modules())
    spec = _empty_spec()
    for name, layer in report.layers.items():
        if not layer.factorized:
            continue
        dense = modules.get(name)
        kind = kind_for(dense) if dense is not None else None
        if kind is None:
            raise SaveFormatError(
                f"layer {name!r} of the report is not a supported layer of this model; pass "
                "the uncompressed model the report was made from"
            )
        spec["layers"].append(
            {"name": name, "kind": kind.name, "rank": layer.rank, "dense": kind.dense_spec(dense)}
        )
    return spec


def _check_header(spec: Any, source: str) -> None:
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise SaveFormatError(f"{source} is not a balf save (no {FORMAT!r} spec); use balf.save")
    version = spec.get("format_version")
    if version not in _READABLE_VERSIONS:
        from balf._version import __version__

        raise SaveFormatError(
            f"{source} was written by balf {spec.get('library_version')} in save format "
            f"{version}; balf {__version__} reads format(s) {list(_READABLE_VERSIONS)}. Load it "
            "with the balf version that wrote it (or re-save it from the model)"
        )


def apply_spec(
    model: nn.Module,
    spec: Mapping[str, Any],
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Replace, in place, every layer the spec names by an *uninitialised* factorized layer.

    Args:
        model: the uncompressed architecture.
        spec: a :func:`model_spec` / :func:`spec_from_report` / :func:`read_spec` dict.
        device, dtype: of the new layers (default: those of the dense layer replaced).

    Returns:
        The model (the new layer itself when the spec names the root module ``""``).

    Raises:
        SaveFormatError: a named layer is missing, of another kind, or of another shape, or its
            rank exceeds the layer's full rank (checked before any tensor is allocated).
    """
    _check_header(spec, "the spec")
    out = model
    if not isinstance(spec.get("layers"), list):
        raise SaveFormatError("the spec's 'layers' is not a list; save the model again")
    # attention modules holding a saved layer were unpacked (balf.layers.attention)
    prepare_replacement(model, [str(e.get("name")) for e in spec["layers"] if isinstance(e, dict)])
    for index, entry in enumerate(spec["layers"]):
        check_layer_entry(entry, index, SaveFormatError)
        # looked up now: a model compressed twice names layers inside earlier replacements
        modules = dict(out.named_modules())
        name, kind = entry.get("name"), entry.get("kind")
        dense = modules.get(name)
        # the dense layer's own kind first: kinds recognised on sight register on look-up
        own = kind_for(dense) if dense is not None else None
        layer_kind = own if own is not None and own.name == kind else kind_named(kind)
        if layer_kind is None:
            raise SaveFormatError(
                f"layer {name!r} has kind {kind!r}, unknown to this balf (known: "
                f"{sorted(layer_kinds())}); register it with balf.register_layer_kind"
            )
        if dense is None:
            raise SaveFormatError(
                f"layer {name!r} of the saved model is missing from this model; pass the "
                "architecture the compressed model was made from"
            )
        if not isinstance(dense, layer_kind.dense_type):
            raise SaveFormatError(
                f"layer {name!r} is a {type(dense).__name__} in this model but was a "
                f"{layer_kind.dense_type.__name__} ({kind}) in the saved model; pass the same "
                "architecture"
            )
        expected = layer_kind.dense_spec(dense)
        if expected != entry["dense"]:
            diff = {
                k: (entry["dense"].get(k), v)
                for k, v in expected.items()
                if entry["dense"].get(k) != v
            }
            raise SaveFormatError(
                f"layer {name!r} has another shape in this model than in the saved model "
                f"(saved vs here: {diff}); pass the same architecture (e.g. same number of classes)"
            )
        check_rank(entry, layer_kind, dense, SaveFormatError)  # before anything is allocated
        weight = layer_kind.weight(dense)
        layer = layer_kind.empty(entry, device=device or weight.device, dtype=dtype or weight.dtype)
        if name == "":
            out = layer
        else:
            for alias in module_names(out).get(id(dense), [name]):  # a shared module stays shared
                out.set_submodule(alias, layer)
    return out


# -- files --------------------------------------------------------------------------------------


def _deduplicated(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors to write (contiguous, on the CPU) and ``{alias: saved name}`` of shared ones."""
    seen: dict[tuple, str] = {}
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    for name, tensor in state.items():
        if tensor.device.type == "meta":
            raise BALFError(f"tensor {name!r} is on the meta device and has no values to save")
        key = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tuple(tensor.stride()),
            tensor.dtype,
        )
        if tensor.numel() > 0 and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.detach().to("cpu").contiguous()
    return tensors, aliases


def save(model: nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write a compressed (or any) model's weights and its factorization spec to ``path``.

    Args:
        model: the model, e.g. from :func:`balf.compress`.
        path: the ``.safetensors`` file to write (atomically: temporary file, then rename).
        metadata: extra string key/values for the file's header (e.g. the report as JSON).

    Returns:
        ``path``.

    Example:
        >>> small, report = balf.compress(model, calib, balf.BALFConfig(0.5))
        >>> balf.save(small, "small.safetensors")
        >>> again = balf.load("small.safetensors", make_model())   # in another process
    """
    path = Path(path)
    spec = model_spec(model)
    tensors, spec["aliases"] = _deduplicated(model.state_dict())
    spec["tied"] = tied_tensors(model)
    spec["checksum"] = {
        "algorithm": ALGORITHM,
        "tensors": tensors_checksum(tensors),
        "spec": spec_checksum(spec),
    }
    header = {str(k): str(v) for k, v in (metadata or {}).items()}
    if _METADATA_KEY in header:
        raise BALFError(f"metadata key {_METADATA_KEY!r} is reserved for the balf spec")
    header[_METADATA_KEY] = json.dumps(spec)
    remove_save_orphans(path)  # temporary files of earlier saves that were killed
    atomic_write_bytes(safetensors_bytes(tensors, metadata=header), path)
    log.info("saved %d factorized layers to %s", len(spec["layers"]), path)
    return path


def read_spec(path: str | Path) -> dict[str, Any]:
    """The JSON spec stored in a file written by :func:`save`.

    Raises:
        FileNotFoundError: no such file.
        SaveFormatError: not a balf save, or a save format this version cannot read.
        CorruptSaveError: the spec differs from the checksum stored with it (edited header).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (write it with balf.save)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise SaveFormatError(f"{path} is not a safetensors file ({exc}); use balf.save") from exc
    try:
        spec = json.loads(meta[_METADATA_KEY])
    except (KeyError, json.JSONDecodeError) as exc:
        raise SaveFormatError(
            f"{path} has no balf spec in its header; write it with balf.save"
        ) from exc
    _check_header(spec, str(path))
    verify_spec_checksum(spec, str(path))
    return spec


def _target_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device.type != "meta":
            return tensor.device
    return torch.device("cpu")


# safetensors' dtype names (``safe_open(...).get_slice(name).get_dtype()``)
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _meta_tensors(path: Path) -> dict[str, Tensor]:
    """Every tensor of the file as a meta tensor of its shape and dtype (no data read)."""
    out = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for k in f.keys():  # noqa: SIM118 (safe_open has no iter)
            piece = f.get_slice(k)
            dtype = _SAFETENSORS_DTYPES.get(piece.get_dtype())
            if dtype is None:  # a rarer dtype: read it to learn it
                out[k] = f.get_tensor(k).to("meta")
            else:
                out[k] = torch.empty(piece.get_shape(), dtype=dtype, device="meta")
    return out


def load(path: str | Path, model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save` from its uncompressed architecture.

    Args:
        path: the file :func:`save` wrote.
        model: a fresh instance of the *uncompressed* architecture, randomly initialised or
            built on the meta device (``with torch.device("meta"): model = make_model()``);
            modified in place.
        device: where the loaded tensors go (default: the model's device, or the CPU for a
            meta model). ``"meta"`` gives the structure alone: every tensor on the meta device
            with the saved shape and dtype, no tensor data read (so the tensor checksum is not
            verified; the spec's is).

    Returns:
        The loaded model in eval mode, with every tensor from the file (dtypes as saved).

    Raises:
        SaveFormatError: the file does not match the model: a layer is missing or has another
            shape, a tensor is missing or unexpected (each named), or the format is unknown.
        CorruptSaveError: the tensor data differs from the checksum stored when it was saved.
    """
    spec = read_spec(path)
    target = _target_device(model, device)
    model = apply_spec(model, spec, device="meta")
    if target.type == "meta":
        state = _meta_tensors(path)
    else:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no iter)
        verify_checksum(spec, state, path)
        state = {k: v.to(target) for k, v in state.items()}
    check_aliases(spec.get("aliases", {}), state, str(path), SaveFormatError)
    for alias, name in spec.get("aliases", {}).items():
        state[alias] = state[name]
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise SaveFormatError(
            f"{path} does not match this model: missing tensors {missing[:5]}"
            f"{' …' if len(missing) > 5 else ''}, unexpected tensors {unexpected[:5]}"
            f"{' …' if len(unexpected) > 5 else ''}; pass the architecture that was saved"
        )
    for k, v in expected.items():
        if tuple(v.shape) != tuple(state[k].shape):
            raise SaveFormatError(
                f"tensor {k!r} has shape {tuple(state[k].shape)} in {path} but "
                f"{tuple(v.shape)} in this model; pass the architecture that was saved"
            )
    model.load_state_dict(state, strict=True, assign=True)
    check_tied(spec.get("tied", {}), model, str(path), SaveFormatError)
    retie(model, spec.get("tied", {}))  # one Parameter per tied group, as when saved
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left and target.type != "meta":
        raise SaveFormatError(
            f"tensors {left[:5]} are not in {path} (non-persistent buffers, computed when the "
            "model is built) and the model was built on the meta device; build it with only its "
            "parameters on the meta device (accelerate.init_empty_weights(include_buffers=False)"
            "; balf.load_pretrained does so for Hugging Face folders) or on a real device"
        )
    model = model.to(target)
    for hook in _LOAD_HOOKS:
        hook(model)
    return model.eval()
