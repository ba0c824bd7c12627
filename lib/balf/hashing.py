"""Content digests of tensors and models, used as cache keys and to detect stale statistics."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["model_digest", "tensor_digest", "update_with_tensor"]


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
