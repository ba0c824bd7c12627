"""Content digests of tensors and models, used as cache keys and to detect stale statistics."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "model_digest",
    "model_fingerprint",
    "object_digest",
    "tensor_digest",
    "update_with_tensor",
]


def update_with_tensor(h: hashlib._Hash, t: Tensor) -> None:
    """Feed a tensor's dtype, shape and bytes into a hash object."""
    t = t.detach()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        data = t.contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
        h.update(memoryview(data))


def tensor_digest(t: Tensor) -> str:
    """A short hex digest of one tensor's contents."""
    h = hashlib.blake2b(digest_size=16)
    update_with_tensor(h, t)
    return h.hexdigest()


def model_digest(model: nn.Module, names: Iterable[str] | None = None) -> str:
    """Digest of a model's state (parameters and buffers, e.g. BN statistics).

    Args:
        names: restrict to the state of these submodules (default: the whole model).
    """
    h = hashlib.blake2b(digest_size=16)
    modules = dict(model.named_modules())
    selected = [(n, modules[n]) for n in names] if names is not None else [("", model)]
    for prefix, module in selected:
        for key, value in sorted(module.state_dict().items()):
            h.update(f"{prefix}.{key}".encode())
            if isinstance(value, Tensor):
                update_with_tensor(h, value)
    return h.hexdigest()


_PLAIN = (bool, int, float, str, type(None))


def _plain(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    return isinstance(value, _PLAIN)


@cache
def _code_digest(obj: Any) -> str:
    """Digest of a class's or function's source code (its qualified name when unavailable)."""
    name = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        source = ""
    return hashlib.blake2b(f"{name}\n{source}".encode(), digest_size=16).hexdigest()


def code_digest(obj: Any) -> str:
    """Digest of the source code of ``obj`` (a class or function), cached per object."""
    try:
        return _code_digest(obj)
    except TypeError:  # unhashable callable object
        return _code_digest(type(obj))


def model_fingerprint(model: nn.Module, names: Iterable[str] | None = None) -> str:
    """Digest of everything a forward pass depends on that the code can see.

    Covers, for every submodule: its name and class (module path, name and source code), its
    public plain-valued attributes (hyper-parameters such as ``stride`` or ``eps``; not
    ``training``), every parameter and buffer including non-persistent ones, and which tensors
    and modules are shared under several names. A different activation class, a changed
    hyper-parameter or buffer, or an edited ``forward`` gives another fingerprint.

    Args:
        names: restrict to these submodules (default: the whole model).
    """
    h = hashlib.blake2b(digest_size=16)
    roots = dict(model.named_modules(remove_duplicate=False))
    selected = [(n, roots[n]) for n in names] if names is not None else [("", model)]
    seen: dict[int, str] = {}
    for prefix, root in selected:
        for sub, module in root.named_modules(remove_duplicate=False):
            name = f"{prefix}.{sub}" if prefix and sub else prefix or sub
            h.update(f"module {name} {code_digest(type(module))}".encode())
            if id(module) in seen:
                h.update(f" alias of {seen[id(module)]}\n".encode())
                continue
            seen[id(module)] = name
            attrs = {
                k: v
                for k, v in sorted(vars(module).items())
                if not k.startswith("_") and k != "training" and _plain(v)
            }
            h.update(repr(attrs).encode())
            tensors = [
                *module.named_parameters(recurse=False),
                *module.named_buffers(recurse=False),
            ]
            for key, value in tensors:
                if value is None:
                    continue
                h.update(f" {key}".encode())
                if id(value) in seen:
                    h.update(f" shares {seen[id(value)]}".encode())
                    continue
                seen[id(value)] = f"{name}.{key}"
                update_with_tensor(h, value)
            for hook in (*module._forward_pre_hooks.values(), *module._forward_hooks.values()):
                h.update(f" hook {code_digest(hook)}".encode())
    return h.hexdigest()


def object_digest(obj: Any) -> str:
    """Digest of a nested structure of dicts, lists, tuples, tensors and plain values."""
    h = hashlib.blake2b(digest_size=16)
    _update_with_object(h, obj)
    return h.hexdigest()


def _update_with_object(h: hashlib._Hash, obj: Any) -> None:
    if isinstance(obj, Tensor):
        h.update(b"T")
        update_with_tensor(h, obj)
    elif isinstance(obj, Mapping):  # dicts, BatchEncoding, ...
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            h.update(repr(key).encode())
            _update_with_object(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _update_with_object(h, item)
    else:
        h.update(f"V{type(obj).__name__}:{obj!r}".encode())
