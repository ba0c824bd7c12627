"""Evaluation mode for the duration of a call, every module's own ``training`` flag restored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


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
