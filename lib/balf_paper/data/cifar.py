"""CIFAR-10 (torchvision's on-disk layout) and CIFAR-10-C (one ``.npy`` per corruption).

CIFAR-10 is read by ``torchvision.datasets.CIFAR10`` from ``<root>/cifar-10-batches-py/``.
CIFAR-10-C is a folder with ``labels.npy`` and ``<corruption>.npy`` files of shape
``(50000, 32, 32, 3)`` uint8: the 10000 test images at severity 1, then 2, ... 5. The block size
is ``len(file) // 5``, so a corrupted Fashion-MNIST test set written in the same layout (arrays
``(5·N, 28, 28)`` or ``(5·N, 28, 28, 1)`` uint8) is read by the same :class:`CIFAR10C` class.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from balf.errors import BALFError, DatasetNotFoundError
from balf_paper.data.common import eval_transform
from balf_paper.data.image_folder import ImageFolderTensors

if TYPE_CHECKING:  # imported on use: scripts' --help stays fast
    from torchvision import datasets
    from torchvision import transforms as T

__all__ = [
    "CIFAR10C",
    "CIFAR10_JPEG_SOURCE",
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CORRUPTIONS",
    "SEVERITIES",
    "cifar10",
    "cifar10_jpeg",
    "cifar10_transform",
]

logger = logging.getLogger(__name__)

#: Per-channel mean / std of the CIFAR-10 training images scaled to [0, 1].
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

#: The 15 CIFAR-10-C corruptions (Hendrycks & Dietterich, 2019), in the benchmark's order.
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

_CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
#: How to obtain CIFAR-10 (torchvision's pickles): one wording for every message.
CIFAR10_SOURCE = (
    "Get it with `cifar10(root, train, download=True)` on a machine with a network, or download "
    "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it "
    "into the root folder."
)
#: How to obtain the JPEG release of CIFAR-10 (dataset name ``cifar10-jpeg``).
CIFAR10_JPEG_SOURCE = (
    "Run `bash scripts/cifar10/get_data.sh [ARCHIVE_OR_FOLDER]`: it extracts cifar10-jpeg.tar.gz "
    "(the JPEG release of CIFAR-10, ImageFolder layout) into datasets/cifar10-jpeg, or pass "
    "--data-root pointing at an extracted copy."
)
_CIFAR10C_SOURCE = (
    "Download CIFAR-10-C.tar from https://zenodo.org/record/2535967 and extract it; pass the "
    "folder holding labels.npy and the <corruption>.npy files."
)


def cifar10_transform(train: bool) -> T.Compose:
    """Standard CIFAR-10 transform: PIL image ``(32, 32)`` RGB → float tensor ``(3, 32, 32)``.

    Args:
        train: ``True`` adds the training augmentation (random crop 32 with padding 4 and
            horizontal flip) before normalisation; ``False`` only normalises.

    Returns:
        ``Compose`` ending in ``ToTensor`` and ``Normalize(CIFAR10_MEAN, CIFAR10_STD)``.

    Example:
        >>> cifar10_transform(train=False)(PIL.Image.new("RGB", (32, 32))).shape
        torch.Size([3, 32, 32])
    """
    normalise = eval_transform(CIFAR10_MEAN, CIFAR10_STD)
    if not train:
        return normalise
    from torchvision import transforms as T

    augment = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    return T.Compose([*augment, *normalise.transforms])


def cifar10(
    root: str | os.PathLike,
    train: bool,
    transform: Callable[[Image.Image], Any] | None = None,
    *,
    download: bool = False,
) -> datasets.CIFAR10:
    """CIFAR-10 train (50000 images) or test (10000 images) split from torchvision's layout.

    Args:
        root: folder containing ``cifar-10-batches-py/`` (``data_batch_1`` ... ``data_batch_5``,
            ``test_batch``, ``batches.meta``).
        train: training split if True, test split otherwise.
        transform: applied to each PIL image; ``None`` uses :func:`cifar10_transform` of the split
            (training augmentation for ``train=True``). Pass ``cifar10_transform(False)`` for
            calibration on training images without augmentation.
        download: let torchvision download the archive into ``root`` (needs a network).

    Returns:
        ``torchvision.datasets.CIFAR10`` yielding ``(image (3, 32, 32) float32, label int)`` with
        the default transform.

    Raises:
        DatasetNotFoundError: if files are missing or fail torchvision's checksum test; the message
            names the expected path and how to obtain the data.

    Example:
        >>> test_set = cifar10("datasets", train=False)
        >>> image, label = test_set[0]
        >>> image.shape
        torch.Size([3, 32, 32])
    """
    folder = Path(root) / _CIFAR10_FOLDER
    if transform is None:
        transform = cifar10_transform(train)
    if not download:
        missing = [name for name in _CIFAR10_FILES if not (folder / name).is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"CIFAR-10 not found: {folder} lacks {', '.join(missing)}. Expected torchvision's "
                f"layout {folder}/ with {', '.join(_CIFAR10_FILES)}. {CIFAR10_SOURCE}"
            )
    try:
        from torchvision import datasets

        return datasets.CIFAR10(str(root), train=train, transform=transform, download=download)
    except RuntimeError as exc:  # torchvision: "not found or corrupted" (md5 mismatch)
        raise DatasetNotFoundError(
            f"CIFAR-10 in {folder} is missing or corrupted (torchvision's md5 check failed: "
            f"{exc}). {CIFAR10_SOURCE}"
        ) from exc
    except OSError as exc:  # download=True without a network (URLError) or unwritable root
        raise DatasetNotFoundError(
            f"CIFAR-10 could not be downloaded into {root}: {exc}. {CIFAR10_SOURCE}"
        ) from exc


def cifar10_jpeg(root: str | os.PathLike, train: bool) -> ImageFolderTensors:
    """CIFAR-10 as republished in JPEG form (``train/<class>/*.jpg``, ``test/<class>/*.jpg``).

    Same images and split as the original release, re-encoded as (lossy) JPEG; results on it are
    labelled "CIFAR-10 (JPEG release)". Images are normalised with the CIFAR-10 mean/std and not
    augmented (the training script augments uint8 batches itself).

    Args:
        root: folder holding ``train/`` and ``test/`` with the ten class folders.
        train: training split (50,000 images) if True, test split (10,000) otherwise.

    Returns:
        dataset of ``(image float32 (3, 32, 32), label int)``.

    Raises:
        DatasetNotFoundError: if the folders are missing; the message says how to get them.
    """
    split = "train" if train else "test"
    return ImageFolderTensors(
        root, split, CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, source_hint=CIFAR10_JPEG_SOURCE
    )


class CIFAR10C(Dataset):
    """One (corruption, severity) block of CIFAR-10-C, or of a dataset in the same layout.

    Each ``<corruption>.npy`` holds ``5·N`` images (uint8, ``(5·N, H, W, C)`` with C in {1, 3} or
    ``(5·N, H, W)``): the N test images at severity 1, then 2, ... 5. ``labels.npy`` holds ``5·N``
    (or ``N``) labels. Files are memory-mapped, so only the requested images are read.

    Args:
        root: folder with ``labels.npy`` and ``<corruption>.npy``.
        corruption: one of :data:`CORRUPTIONS`.
        severity: 1 to 5.
        transform: applied to each image as a PIL image (``"RGB"`` or ``"L"``); ``None`` uses
            ``cifar10_transform(train=False)``. For grayscale data pass e.g.
            ``eval_transform((FASHION_MNIST_MEAN,), (FASHION_MNIST_STD,))``.
        indices: optional fixed subset of positions ``0 <= i < N`` within the block.

    Items are ``(image, label)``: with the default transform ``image`` is a float32 tensor
    ``(C, H, W)`` normalised with the CIFAR-10 mean/std; ``label`` is an int.

    Attributes:
        block_size: N, the number of images per severity (``len(file) // 5``).
        indices: int array ``(len(self),)`` of the selected positions within the block.
        targets: int64 array ``(len(self),)`` of the selected images' labels.

    Raises:
        BALFError: for an unknown corruption, a severity outside 1..5, bad indices, or arrays of
            the wrong dtype/shape.
        DatasetNotFoundError: if the folder or one of its files is missing.

    Example:
        >>> ds = CIFAR10C("datasets/CIFAR-10-C", "fog", severity=3)
        >>> len(ds), ds[0][0].shape
        (10000, torch.Size([3, 32, 32]))
    """

    def __init__(
        self,
        root: str | os.PathLike,
        corruption: str,
        severity: int,
        transform: Callable[[Image.Image], Any] | None = None,
        indices: Sequence[int] | None = None,
    ) -> None:
        if corruption not in CORRUPTIONS:
            raise BALFError(
                f"unknown corruption {corruption!r}; expected one of: {', '.join(CORRUPTIONS)}"
            )
        is_int = isinstance(severity, (int, np.integer)) and not isinstance(severity, bool)
        if not is_int or severity not in SEVERITIES:
            raise BALFError(f"severity must be an integer from 1 to 5, got {severity!r}")
        self.root = Path(root)
        self.corruption = corruption
        self.severity = int(severity)
        self.transform = transform if transform is not None else cifar10_transform(train=False)
        self.images_path = self.root / f"{corruption}.npy"
        self.labels_path = self.root / "labels.npy"
        for path in (self.images_path, self.labels_path):
            if not path.is_file():
                raise DatasetNotFoundError(
                    f"CIFAR-10-C file not found: {path}. Expected a folder with labels.npy and one "
                    f"<corruption>.npy of shape (50000, 32, 32, 3) uint8 per corruption "
                    f"(severities 1..5 stacked). {_CIFAR10C_SOURCE}"
                )
        images = np.load(self.images_path, mmap_mode="r")
        labels = np.load(self.labels_path, mmap_mode="r")
        self.block_size = _check_arrays(images, labels, self.images_path, self.labels_path)
        self._offset = (self.severity - 1) * self.block_size
        block = np.arange(self.block_size) if indices is None else np.asarray(indices, dtype=int)
        if block.ndim != 1 or (block.size and (block.min() < 0 or block.max() >= self.block_size)):
            raise BALFError(f"indices must be positions in [0, {self.block_size}), got {indices!r}")
        self.indices: np.ndarray = block
        label_offset = self._offset if len(labels) == len(images) else 0
        self.targets: np.ndarray = np.asarray(labels[label_offset + block], dtype=np.int64)
        self._images: np.ndarray | None = None
        logger.debug("%s severity %d: %d images", corruption, severity, len(block))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if self._images is None:  # opened lazily, per process (DataLoader workers)
            self._images = np.load(self.images_path, mmap_mode="r")
        array = np.asarray(self._images[self._offset + int(self.indices[index])])
        image = Image.fromarray(array if array.ndim == 2 or array.shape[2] == 3 else array[..., 0])
        return self.transform(image), int(self.targets[index])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_images"] = None  # never pickle the memory map (it would copy the whole file)
        return state

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(corruption={self.corruption}, severity={self.severity}, "
            f"n={len(self)}, root={str(self.root)!r})"
        )


def _check_arrays(
    images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path
) -> int:
    """Validate a CIFAR-10-C style pair of arrays; return the per-severity block size N."""
    layout = "(5·N, H, W, C) with C in {1, 3}, or (5·N, H, W)"
    if images.dtype != np.uint8:
        raise BALFError(f"{images_path}: expected uint8 images, got dtype {images.dtype}")
    channels_ok = images.ndim == 3 or (images.ndim == 4 and images.shape[3] in (1, 3))
    if not channels_ok or len(images) == 0 or len(images) % len(SEVERITIES):
        raise BALFError(f"{images_path}: expected shape {layout}, got {images.shape}")
    block_size = len(images) // len(SEVERITIES)
    if labels.ndim != 1 or len(labels) not in (len(images), block_size):
        raise BALFError(
            f"{labels_path}: expected shape ({len(images)},) or ({block_size},) to match "
            f"{images_path.name} of shape {images.shape}, got {labels.shape}"
        )
    return block_size
