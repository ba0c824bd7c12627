"""Evaluation mode for the duration of a call, every module's own ``training`` flag restored.

Also: reading a parametrized weight without advancing its parametrizations' state
(:func:`steady_parametrizations`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

T = TypeVar("T")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` and ``torch.no_grad()`` for the duration, undone afterwards even on error.

    Each submodule gets back its own flag: ``model.train(was_training)`` would overwrite a mixed
    state, e.g. a frozen BatchNorm inside a model in train mode.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, flag in flags:
            module.training = flag


def restores_mode(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate a function whose first argument is a model: every module's ``training`` flag is
    restored when it returns or raises (the function may switch the model to eval mode)."""

    @functools.wraps(fn)
    def wrapper(model: nn.Module, *args: Any, **kwargs: Any) -> T:
        flags = [(m, m.training) for m in model.modules()]
        try:
            return fn(model, *args, **kwargs)
        finally:
            for module, flag in flags:
                module.training = flag

    return wrapper


@contextlib.contextmanager
def steady_parametrizations(module: nn.Module) -> Iterator[None]:
    """The parametrizations of ``module``'s own tensors in eval mode for the duration.

    A parametrized weight (``torch.nn.utils.parametrizations.spectral_norm``, ``weight_norm``,
    …) is recomputed at every read; spectral_norm in train mode also runs a power-iteration
    step, changing its ``_u``/``_v`` buffers. Reading a caller's weight inside this context
    leaves them as they were (the weight read is the one eval mode computes).
    """
    lists = getattr(module, "parametrizations", None)
    flags = [(m, m.training) for m in lists.modules()] if isinstance(lists, nn.Module) else []
    for m, _ in flags:
        m.training = False
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
