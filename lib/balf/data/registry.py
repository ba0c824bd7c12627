"""Datasets by name: geometry, normalisation and loaders, used by the sweeps and by training.

A :class:`DatasetInfo` says everything the experiment code needs about a dataset: channels,
classes, image size, normalisation, the train/test splits with evaluation preprocessing (for
calibration and evaluation), the splits as uint8 tensors (for the training script, which augments
and normalises whole batches itself), and optionally a corrupted test set. Register a new one with
:func:`register_dataset`; the sweep runner, the training script and ``--dataset`` choices read
the registry.

Built in: ``cifar10`` (torchvision's pickles), ``cifar10-jpeg`` (the JPEG release, image folders),
``fashion-mnist`` (IDX files) and ``imagenet`` (``imagenet-calib/`` and ``imagenet-val/`` folders,
public pretrained weights).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from balf.errors import BALFError, DatasetNotFoundError
from balf_paper.models.imagenet import IMAGENET_MEAN, IMAGENET_STD
from balf_paper.data.cifar import (
    CIFAR10_CLASSES,
    CIFAR10_JPEG_SOURCE,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10C,
    cifar10,
    cifar10_transform,
)
from balf_paper.data.common import eval_transform
from balf_paper.data.fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from balf_paper.data.image_folder import ImageFolderTensors, load_image_folder
from balf_paper.data.imagenet import IMAGENET_NUM_CLASSES, imagenet_folder

__all__ = ["DatasetInfo", "dataset_info", "register_dataset", "registered_datasets"]

Root = str | os.PathLike
#: ``(root, model name) -> (train, test)`` with evaluation preprocessing.
SplitsLoader = Callable[[Root, str], tuple[Dataset, Dataset]]
#: ``root or None -> {"train": (images, labels), "test": ...}``, uint8 ``(N, C, H, W)``, int64.
TensorLoader = Callable[[Root | None], dict[str, tuple[Tensor, Tensor]]]
#: ``(root, corruption, severity, indices or None, model name) -> test set`` in the CIFAR-10-C
#: layout (the model name selects its input normalisation).
CorruptedLoader = Callable[[Root, str, int, Sequence[int] | None, str], Dataset]


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset of the experiments.

    Attributes:
        name: the ``--dataset`` name, e.g. ``"cifar10"``.
        channels, num_classes: what the model's first and last layers see.
        image_size: side of the (square) training images (the model input for small datasets).
        mean, std: per-channel normalisation of ``[0, 1]`` images.
        splits: the train and test splits with evaluation preprocessing (calibration images
            come from the train split, without augmentation).
        tensors: the splits as uint8 tensors for training (``None``: not trainable here).
        corrupted: one (corruption, severity) test set (``None``: no corrupted sets).
        crop_padding: zero padding of the training random crop.
        public_weights: models come with public pretrained weights (no checkpoint needed).
    """

    name: str
    channels: int
    num_classes: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: SplitsLoader
    tensors: TensorLoader | None = None
    corrupted: CorruptedLoader | None = None
    crop_padding: int = 0
    public_weights: bool = False


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Make ``info.name`` a dataset of the experiments (replacing any earlier entry)."""
    _REGISTRY[info.name] = info
    return info


def dataset_info(name: str) -> DatasetInfo:
    """The registered dataset ``name`` (``BALFError`` naming the known ones otherwise)."""
    if name not in _REGISTRY:
        raise BALFError(f"unknown dataset {name!r}; choose one of {tuple(_REGISTRY)}")
    return _REGISTRY[name]


def registered_datasets() -> tuple[str, ...]:
    """Names of the registered datasets, in registration order."""
    return tuple(_REGISTRY)


# --------------------------------------------------------------------------- CIFAR-10


def _cifar10_eval_transform(model_name: str):
    """PIL -> normalised tensor with the model's normalisation (third-party models: their own)."""
    from balf_paper.models import THIRD_PARTY_CHECKPOINTS, normalisation_of

    if model_name in THIRD_PARTY_CHECKPOINTS:
        return eval_transform(*normalisation_of(model_name, "cifar10"))
    return cifar10_transform(train=False)


def _cifar10_splits(root: Root, model_name: str) -> tuple[Dataset, Dataset]:
    tf = _cifar10_eval_transform(model_name)
    return cifar10(root, train=True, transform=tf), cifar10(root, train=False, transform=tf)


def _cifar10_tensors(root: Root | None) -> dict[str, tuple[Tensor, Tensor]]:
    import torch

    out = {}
    for split in ("train", "test"):
        ds = cifar10(root or "datasets", train=split == "train", transform=lambda image: image)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        out[split] = (images, torch.tensor(ds.targets, dtype=torch.int64))
    return out


def _cifar10_corrupted(root, corruption, severity, indices, model_name="resnet20") -> Dataset:
    tf = _cifar10_eval_transform(model_name)
    return CIFAR10C(root, corruption, severity, tf, indices)


def _cifar10_jpeg_corrupted(root, corruption, severity, indices, model_name="resnet20"):
    try:
        return _cifar10_corrupted(root, corruption, severity, indices, model_name)
    except DatasetNotFoundError as exc:
        raise DatasetNotFoundError(
            f"{exc} For CIFAR-10 (JPEG release) the corrupted sets are made here: "
            "`bash scripts/cifar10/make_corrupted.sh` writes datasets/cifar10-jpeg-c."
        ) from exc


def _jpeg_root(root: Root | None) -> Path:
    """The folder holding ``train/`` and ``test/``: ``root`` itself, or ``<root>/cifar10-jpeg``
    when that exists (``--data-root datasets``); ``None`` means ``datasets/cifar10-jpeg``."""
    if root is None:
        return Path("datasets") / "cifar10-jpeg"
    nested = Path(root) / "cifar10-jpeg"
    return nested if nested.is_dir() else Path(root)


def _cifar10_jpeg_splits(root: Root, model_name: str) -> tuple[Dataset, Dataset]:
    """Train split decoded on access (calibration reads a small subset), test split preloaded;
    the model's normalisation (third-party option-A models: the ImageNet mean/std)."""
    from balf_paper.models import normalisation_of

    mean, std = normalisation_of(model_name, "cifar10-jpeg")
    folder = _jpeg_root(root)
    return tuple(
        ImageFolderTensors(
            folder,
            split,
            CIFAR10_CLASSES,
            mean,
            std,
            source_hint=CIFAR10_JPEG_SOURCE,
            preload=split == "test",
        )
        for split in ("train", "test")
    )


def _cifar10_jpeg_tensors(root: Root | None) -> dict[str, tuple[Tensor, Tensor]]:
    folder = _jpeg_root(root)
    return {
        split: load_image_folder(folder, split, CIFAR10_CLASSES, source_hint=CIFAR10_JPEG_SOURCE)
        for split in ("train", "test")
    }


# --------------------------------------------------------------------------- Fashion-MNIST


def _fashion_mnist_root(root: Root | None) -> Path | None:
    """An existing folder given explicitly must hold the four IDX files; else ``None``."""
    from balf_paper.data.fashion_mnist import FASHION_MNIST_FILES

    folder = Path(root) if root and Path(root).is_dir() else None
    if folder is not None:
        files = [f for pair in FASHION_MNIST_FILES.values() for f in pair]
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"Fashion-MNIST: {folder} lacks {', '.join(missing)}. Put the four IDX .gz "
                "files there, or pass a --data-root that does not exist to use the standard "
                "search path (/usr/share/datasets/fashion-mnist from `apt-get install "
                "dataset-fashion-mnist`, or torchvision's download)."
            )
    return folder


def _fashion_mnist_splits(root: Root, model_name: str) -> tuple[Dataset, Dataset]:
    from balf_paper.data.fashion_mnist import FashionMNIST

    folder = _fashion_mnist_root(root)
    return FashionMNIST("train", folder), FashionMNIST("test", folder)


def _fashion_mnist_tensors(root: Root | None) -> dict[str, tuple[Tensor, Tensor]]:
    from balf_paper.data.fashion_mnist import load_fashion_mnist

    out = {}
    for split in ("train", "test"):
        images, labels = load_fashion_mnist(split, root)
        out[split] = (images.unsqueeze(1).contiguous(), labels)
    return out


def _fashion_mnist_corrupted(root, corruption, severity, indices, model_name="") -> Dataset:
    tf = eval_transform((FASHION_MNIST_MEAN,), (FASHION_MNIST_STD,))
    try:
        return CIFAR10C(root, corruption, severity, tf, indices)
    except DatasetNotFoundError as exc:
        paths = (Path(root) / f"{corruption}.npy", Path(root) / "labels.npy")
        missing = [p for p in paths if not p.is_file()]
        raise DatasetNotFoundError(
            f"Fashion-MNIST-C file not found: {missing[0] if missing else root}. Generate it "
            "with `bash scripts/fashion_mnist/make_corrupted.sh` (CIFAR-10-C layout: labels.npy "
            "and <corruption>.npy of shape (5·N, 28, 28) uint8)."
        ) from exc


# --------------------------------------------------------------------------- ImageNet


def _imagenet_splits(root: Root, model_name: str) -> tuple[Dataset, Dataset]:
    from balf_paper.models import eval_transform as model_transform

    tf = model_transform(model_name)
    root = Path(root)
    return imagenet_folder(root / "imagenet-calib", tf), imagenet_folder(root / "imagenet-val", tf)


CIFAR10 = register_dataset(
    DatasetInfo(
        "cifar10",
        channels=3,
        num_classes=len(CIFAR10_CLASSES),
        image_size=32,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        splits=_cifar10_splits,
        tensors=_cifar10_tensors,
        corrupted=_cifar10_corrupted,
        crop_padding=4,
    )
)
# The same images re-encoded as JPEG: CIFAR-10's geometry, normalisation and corrupted sets.
register_dataset(
    dataclasses.replace(
        CIFAR10,
        name="cifar10-jpeg",
        splits=_cifar10_jpeg_splits,
        tensors=_cifar10_jpeg_tensors,
        corrupted=_cifar10_jpeg_corrupted,
    )
)
register_dataset(
    DatasetInfo(
        "fashion-mnist",
        channels=1,
        num_classes=10,
        image_size=28,
        mean=(FASHION_MNIST_MEAN,),
        std=(FASHION_MNIST_STD,),
        splits=_fashion_mnist_splits,
        tensors=_fashion_mnist_tensors,
        corrupted=_fashion_mnist_corrupted,
        crop_padding=2,
    )
)
register_dataset(
    DatasetInfo(
        "imagenet",
        channels=3,
        num_classes=IMAGENET_NUM_CLASSES,
        image_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        splits=_imagenet_splits,
        public_weights=True,
    )
)

# The ImageNet samples (1,300 val / 1,000 train images) under their own name.
from balf_paper.data import imagenet_samples  # noqa: E402, F401
