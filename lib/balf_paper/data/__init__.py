"""Datasets as the paper uses them: CIFAR-10 / CIFAR-10-C, ImageNet folders, Fashion-MNIST.

Everything reads data that users bring (the module docstrings give the exact
on-disk layouts); a missing data set raises :class:`balf.errors.DatasetNotFoundError` naming the
expected path and how to obtain it. Subsets and loaders are built the same way for every data set
(:mod:`balf_paper.data.common`).

The Fashion-MNIST names and the dataset registry (:mod:`balf_paper.data.registry`: ``DatasetInfo``,
``register_dataset``, ``dataset_info``, ``registered_datasets``) are imported on first access, so
that the other modules do not pay for (or depend on) those modules.
"""

from __future__ import annotations

import importlib
from typing import Any

from balf_paper.data.cifar import (
    CIFAR10_CLASSES,
    CIFAR10_JPEG_SOURCE,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10C,
    CORRUPTIONS,
    SEVERITIES,
    cifar10,
    cifar10_jpeg,
    cifar10_transform,
)
from balf_paper.data.common import (
    calibration_subset,
    eval_transform,
    evaluation_subset,
    make_loader,
    random_indices,
)
from balf_paper.data.image_folder import ImageFolderTensors, load_image_folder
from balf_paper.data.imagenet import IMAGENET_NUM_CLASSES, imagenet_folder, is_wnid

_LAZY = {
    "FashionMNIST": "balf_paper.data.fashion_mnist",
    "load_fashion_mnist": "balf_paper.data.fashion_mnist",
    "FASHION_MNIST_MEAN": "balf_paper.data.fashion_mnist",
    "FASHION_MNIST_STD": "balf_paper.data.fashion_mnist",
    "DatasetInfo": "balf_paper.data.registry",
    "dataset_info": "balf_paper.data.registry",
    "register_dataset": "balf_paper.data.registry",
    "registered_datasets": "balf_paper.data.registry",
}

__all__ = [
    "CIFAR10C",
    "CIFAR10_CLASSES",
    "CIFAR10_JPEG_SOURCE",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CORRUPTIONS",
    "DatasetInfo",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "FashionMNIST",
    "IMAGENET_NUM_CLASSES",
    "ImageFolderTensors",
    "SEVERITIES",
    "calibration_subset",
    "cifar10",
    "cifar10_jpeg",
    "cifar10_transform",
    "dataset_info",
    "eval_transform",
    "evaluation_subset",
    "imagenet_folder",
    "is_wnid",
    "load_fashion_mnist",
    "load_image_folder",
    "make_loader",
    "random_indices",
    "register_dataset",
    "registered_datasets",
]


def __getattr__(name: str) -> Any:
    """Import the Fashion-MNIST names on first access (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
