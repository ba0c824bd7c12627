"""Fashion-MNIST from the standard IDX ``.gz`` files.

Fashion-MNIST is the repository's offline stand-in for CIFAR-10 (10 classes, 60k/10k split).
The four files are looked up, in order, in:

1. the ``root`` argument, if given;
2. the directory named by the ``BALF_FASHION_MNIST`` environment variable;
3. ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``);
4. ``./datasets/fashion-mnist``.

If none holds them, torchvision's downloader is tried into ``./datasets/``; if that fails too,
:class:`~balf.errors.DatasetNotFoundError` names the files, the searched paths and how to get them.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from balf.errors import DatasetNotFoundError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "FashionMNIST",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "read_idx",
    "write_idx",
]

logger = logging.getLogger(__name__)

#: Per-channel mean and standard deviation of the training images scaled to [0, 1].
FASHION_MNIST_MEAN: float = 0.2860
FASHION_MNIST_STD: float = 0.3530

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: ``split -> (images file, labels file)``.
FASHION_MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

ENV_VAR = "BALF_FASHION_MNIST"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
LOCAL_DIR = Path("datasets") / "fashion-mnist"

Split = Literal["train", "test"]

# IDX type codes -> numpy dtypes (big-endian as stored on disk).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array.

    Args:
        path: an ``*-idx?-ubyte`` file, plain or ``.gz``.

    Returns:
        Array with the shape stored in the file header, e.g. ``(N, 28, 28)`` uint8 for images
        and ``(N,)`` uint8 for labels.

    Raises:
        ValueError: if the header is malformed or the payload size does not match it.

    Example:
        >>> images = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
        >>> images.shape
        (10000, 28, 28)
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    dtype = _IDX_DTYPES[data[2]]
    ndim = data[3]
    header_end = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header_end != expected:
        raise ValueError(
            f"{path}: header announces shape {shape} ({expected} bytes) "
            f"but the file holds {len(data) - header_end} bytes of data"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_end).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed if ``path`` ends in ``.gz``).

    The inverse of :func:`read_idx`; used to build fixture data and derived datasets in the
    standard format.

    Args:
        path: destination file.
        array: array of any shape whose dtype is one of the IDX types (uint8, int8, int16,
            int32, float32, float64).

    Returns:
        The path written.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"dtype {array.dtype} cannot be stored in an IDX file")
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = array.astype(_IDX_DTYPES[code], copy=False).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + payload)
    return path


def _candidate_dirs(root: str | os.PathLike | None) -> list[Path]:
    dirs = []
    if root is not None:
        dirs.append(Path(root))
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]))
    dirs += [SYSTEM_DIR, LOCAL_DIR]
    return dirs


def _has_all_files(directory: Path) -> bool:
    return all(
        (directory / name).is_file() for pair in FASHION_MNIST_FILES.values() for name in pair
    )


def _try_torchvision_download() -> Path | None:
    """Download with torchvision into ``./datasets/``; return the raw dir or ``None`` on failure."""
    try:
        from torchvision.datasets import FashionMNIST as _TVFashionMNIST

        root = Path("datasets")
        logger.info("Fashion-MNIST not found locally; trying torchvision download into %s", root)
        for train in (True, False):
            _TVFashionMNIST(root=str(root), train=train, download=True)
        raw = root / "FashionMNIST" / "raw"
        return raw if _has_all_files(raw) else None
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        logger.info("torchvision download of Fashion-MNIST failed: %s", exc)
        return None


def find_fashion_mnist(root: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Return the directory holding the four Fashion-MNIST IDX ``.gz`` files.

    Args:
        root: directory to look in first (see the module docstring for the search order).
        download: try torchvision's downloader into ``./datasets/`` when no directory has them.

    Returns:
        The first directory that contains all four files.

    Raises:
        DatasetNotFoundError: when no searched directory has the files and the download failed.
    """
    searched = _candidate_dirs(root)
    for directory in searched:
        if _has_all_files(directory):
            return directory
    if download:
        raw = _try_torchvision_download()
        if raw is not None:
            return raw
        searched.append(Path("datasets") / "FashionMNIST" / "raw")
    files = ", ".join(name for pair in FASHION_MNIST_FILES.values() for name in pair)
    paths = "\n".join(f"  - {d.resolve() if not d.is_absolute() else d}" for d in searched)
    raise DatasetNotFoundError(
        f"Fashion-MNIST not found. Expected the four IDX files ({files}) in one directory.\n"
        f"Searched:\n{paths}\n"
        "Get them either with `apt-get install dataset-fashion-mnist` (installs them in "
        f"{SYSTEM_DIR}) or with torchvision where a network is available: "
        "`torchvision.datasets.FashionMNIST('datasets', download=True)` "
        "(files land in datasets/FashionMNIST/raw). "
        f"Point the `root` argument or the {ENV_VAR} environment variable at the directory."
    )


def load_fashion_mnist(
    split: Split, root: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of Fashion-MNIST as tensors.

    Args:
        split: ``"train"`` (60000 images) or ``"test"`` (10000 images).
        root: optional directory holding the IDX ``.gz`` files (searched first).

    Returns:
        ``(images, labels)``: uint8 tensor of shape ``(N, 28, 28)`` and int64 tensor ``(N,)``.

    Raises:
        DatasetNotFoundError: if the files cannot be found or downloaded.
        ValueError: for an unknown split or inconsistent files.

    Example:
        >>> images, labels = load_fashion_mnist("test")
        >>> images.shape, labels.shape
        (torch.Size([10000, 28, 28]), torch.Size([10000]))
    """
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(FASHION_MNIST_FILES)}, got {split!r}")
    directory = find_fashion_mnist(root)
    image_file, label_file = FASHION_MNIST_FILES[split]
    images = read_idx(directory / image_file)
    labels = read_idx(directory / label_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"Inconsistent Fashion-MNIST {split} files in {directory}: "
            f"images {images.shape}, labels {labels.shape}"
        )
    logger.debug("Loaded Fashion-MNIST %s: %d images from %s", split, len(images), directory)
    return torch.from_numpy(images.astype(np.uint8)), torch.from_numpy(labels.astype(np.int64))


class FashionMNIST(Dataset):
    """Fashion-MNIST as a map-style dataset of normalised float images.

    Args:
        split: ``"train"`` or ``"test"``.
        root: optional directory holding the IDX ``.gz`` files (searched first).
        transform: optional callable applied to each normalised image tensor ``(1, 28, 28)``.

    Items are ``(image, label)`` with ``image`` a float32 tensor of shape ``(1, 28, 28)``
    normalised by :data:`FASHION_MNIST_MEAN` / :data:`FASHION_MNIST_STD` and ``label`` an int.

    Example:
        >>> ds = FashionMNIST("test")
        >>> image, label = ds[0]
        >>> image.shape
        torch.Size([1, 28, 28])
    """

    classes = FASHION_MNIST_CLASSES
    mean = FASHION_MNIST_MEAN
    std = FASHION_MNIST_STD

    def __init__(
        self,
        split: Split,
        root: str | os.PathLike | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.split = split
        self.images, self.labels = load_fashion_mnist(split, root)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].unsqueeze(0).float().div_(255.0)
        image = (image - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])
