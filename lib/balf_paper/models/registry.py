"""The model registry: every model name the paper package builds, each with its builder, its
evaluation preprocessing and the loader of its checkpoint files.

Each family registers its own models beside their definition (timm's ``register_model``):
the CIFAR ResNets (:mod:`balf_paper.models.cifar_resnet`), the third-party option-A CIFAR
ResNets (:mod:`balf_paper.models.cifar_resnet_a`) and the ImageNet models
(:mod:`balf_paper.models.imagenet`, :mod:`balf_paper.models.sample_models`).
:func:`balf_paper.models.create_model` and :func:`~balf_paper.models.preprocessing_of` look the
name up here; no code asks which family a name belongs to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from balf.errors import BALFError
from balf_paper.data.preprocessing import Preprocessing

__all__ = ["ModelEntry", "model_entry", "register_model", "registered_models"]


@dataclass(frozen=True)
class ModelEntry:
    """One registered model.

    Attributes:
        name: the registry name (:func:`~balf_paper.models.create_model`'s argument).
        build: ``build(pretrained, num_classes, in_channels) -> model`` (``None`` sizes: the
            family's defaults); raises :class:`~balf.errors.BALFError` for what the family
            cannot do (e.g. ``pretrained=True`` for a model trained by this repository).
        preprocessing: ``preprocessing(dataset) -> Preprocessing`` of the model's inputs for
            images of a registered dataset.
        load_checkpoint: ``load_checkpoint(model, path)`` loads a weights file of the family
            into a built model (``None``: the family's weights are public, see ``build``).
        family: the family's name, for listings.
    """

    name: str
    build: Callable[[bool, int | None, int | None], nn.Module]
    preprocessing: Callable[[str], Preprocessing]
    load_checkpoint: Callable[[nn.Module, Path], Any] | None
    family: str


_MODELS: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Register ``entry`` under its name (a later registration replaces an earlier one)."""
    _MODELS[entry.name] = entry
    return entry


def registered_models() -> dict[str, ModelEntry]:
    """Every registered model by name, in registration order."""
    return dict(_MODELS)


def model_entry(name: str) -> ModelEntry:
    """The entry of ``name`` (``BALFError`` naming the registered models when unknown)."""
    if name not in _MODELS:
        raise BALFError(f"Unknown model {name!r}; choose one of {list(_MODELS)}")
    return _MODELS[name]
