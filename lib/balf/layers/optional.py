"""Kinds of third-party layer types, registered once their package is in use.

balf's core never imports an optional package. A third-party layer can only be in a model once
the module defining it has been imported, so the look-ups of the layer-kind registry
(:mod:`balf.layers.kind`) call :func:`register_optional` first: it registers the kind of every
such type whose defining module is already loaded, once.

Registered this way: ``transformers.pytorch_utils.Conv1D`` (GPT-2's projections; see
:mod:`.hf_conv1d`).
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["register_optional"]

# defining module (must already be imported) → balf module that registers its types
_OPTIONAL = {"transformers.pytorch_utils": "balf.layers.hf_conv1d"}
_DONE: set[str] = set()


def register_optional() -> None:
    """Register the kinds of third-party layer types whose package has been imported."""
    if len(_DONE) == len(_OPTIONAL):
        return
    for source, target in _OPTIONAL.items():
        if source not in _DONE and source in sys.modules:
            _DONE.add(source)
            importlib.import_module(target)
