"""Small-image datasets given as image folders, e.g. CIFAR-10 as republished in JPEG form.

Layout (ImageFolder's, one folder per class, classes in the dataset's label order)::

    <root>/train/<class>/<any name>.{jpg,jpeg,png}
    <root>/test/<class>/<any name>.{jpg,jpeg,png}

For CIFAR-10 the class folders are ``airplane automobile bird cat deer dog frog horse ship truck``
(CIFAR-10's label order, which is also their sorted order). Every image of a split is decoded once
into one uint8 tensor ``(N, C, H, W)``: 60,000 CIFAR-sized JPEGs take a few seconds, after which
training, calibration and evaluation read memory only. Files are read in sorted order, so the
image order (and with it every seeded subset) is the same on every machine.

The JPEG release of CIFAR-10 is lossy: its pixels differ from the original release, and results
on it are labelled "CIFAR-10 (JPEG release)" (dataset name ``cifar10-jpeg``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from balf.errors import DatasetNotFoundError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFolderTensors",
    "decode_image",
    "list_image_folder",
    "load_image_folder",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
Split = Literal["train", "test"]


def _layout(root: Path, classes: Sequence[str]) -> str:
    return (
        f"{root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg with one folder per class: "
        + " ".join(classes)
    )


def list_image_folder(
    root: str | os.PathLike, split: Split, classes: Sequence[str], source_hint: str = ""
) -> tuple[list[Path], torch.Tensor]:
    """Image files of one split, classes in order and files sorted by name within each class.

    Returns:
        ``(paths, labels)`` with ``labels`` int64 ``(N,)``.

    Raises:
        DatasetNotFoundError: if the split folder or a class folder is missing or holds no
            images; the message names the expected layout (and ``source_hint``).
    """
    root = Path(root)
    folder = root / split
    hint = f" {source_hint}" if source_hint else ""
    if not folder.is_dir():
        raise DatasetNotFoundError(
            f"image-folder dataset not found: {folder} does not exist. Expected "
            f"{_layout(root, classes)}.{hint}"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetNotFoundError(
                f"image-folder dataset: {folder / name} is missing or holds no "
                f"{'/'.join(IMAGE_SUFFIXES)} images. Expected {_layout(root, classes)}.{hint}"
            )
        paths += files
        labels += [label] * len(files)
    return paths, torch.tensor(labels, dtype=torch.int64)


def decode_image(path: Path, channels: int = 3) -> torch.Tensor:
    """One image file as uint8 ``(C, H, W)`` (RGB for 3 channels, grayscale for 1)."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB" if channels == 3 else "L"))
    return torch.from_numpy(array.reshape(*array.shape[:2], -1).copy()).permute(2, 0, 1)


def load_image_folder(
    root: str | os.PathLike,
    split: Split,
    classes: Sequence[str],
    channels: int = 3,
    source_hint: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one split of an image-folder dataset into memory.

    Args:
        root: folder holding ``train/`` and ``test/``.
        split: ``"train"`` or ``"test"``.
        classes: class folder names in label order (label ``i`` is ``classes[i]``).
        channels: 3 decodes as RGB, 1 as grayscale.
        source_hint: appended to the not-found message (how to obtain the data).

    Returns:
        ``(images, labels)``: uint8 ``(N, C, H, W)`` and int64 ``(N,)``, classes in order and
        files sorted by name within each class.

    Raises:
        DatasetNotFoundError: if the split folder, a class folder or its images are missing, or
            the images do not all have one size; the message names the expected layout.
    """
    paths, labels = list_image_folder(root, split, classes, source_hint)
    images = [decode_image(p, channels) for p in paths]
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) != 1:
        raise DatasetNotFoundError(
            f"image-folder dataset {Path(root) / split}: images of several sizes "
            f"{sorted(shapes)}; every image of a split must have the same size"
        )
    stacked = torch.stack(images)
    logger.info("%s: %d images of shape %s", Path(root) / split, len(labels), shapes.pop())
    return stacked, labels


class ImageFolderTensors(Dataset):
    """An image-folder split as a map-style dataset of normalised float images.

    Args:
        root: folder holding ``train/`` and ``test/`` (see the module docstring).
        split: ``"train"`` or ``"test"``.
        classes: class folder names in label order.
        mean, std: per-channel normalisation of images scaled to [0, 1].
        transform: optional callable applied to each normalised image tensor ``(C, H, W)``.
        source_hint: how to obtain the data, for the not-found message.
        preload: decode every image now (fast repeated passes, e.g. evaluation); ``False``
            decodes an image when it is read (a 1024-image calibration subset of a 50,000-image
            training split then decodes 1024 files).

    Items are ``(image, label)``: ``image`` float32 ``(C, H, W)``, ``label`` an int.

    Attributes:
        paths: the image files, in item order; targets: int64 ``(N,)``; images: uint8
        ``(N, C, H, W)`` when preloaded, else ``None``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: Split,
        classes: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        source_hint: str = "",
        preload: bool = True,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.classes = tuple(classes)
        self.channels = len(mean)
        self.paths, self.targets = list_image_folder(root, split, classes, source_hint)
        self.images: torch.Tensor | None = None
        if preload:
            self.images = load_image_folder(root, split, classes, self.channels, source_hint)[0]
        self._mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        raw = (
            self.images[index]
            if self.images is not None
            else decode_image(self.paths[index], self.channels)
        )
        image = (raw.float().div_(255.0) - self._mean) / self._std
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split}, n={len(self)}, root={str(self.root)!r})"
