"""Tiny data sets written in exactly the on-disk layouts the real data uses (helpers, not tests).

Every writer takes a folder, creates what the corresponding loader expects inside it and returns
the path to pass to the code under test:

- :func:`write_cifar10`: ``<root>/cifar-10-batches-py/`` with torchvision's pickles; pair it with
  :func:`accept_cifar10_checksums`, since torchvision checks the md5 of the official files.
- :func:`write_corrupted`: a CIFAR-10-C style folder (``labels.npy`` + ``<corruption>.npy`` of
  shape ``(5·N, H, W[, C])`` uint8); :func:`write_cifar10c` and :func:`write_fashion_mnist_c`
  fix the image shape.
- :func:`write_fashion_mnist`: the four standard IDX ``.gz`` files.
- :func:`write_imagenet`: ``imagenet-calib/`` and ``imagenet-val/`` ImageFolders of small JPEGs
  in WordNet-id folders.

:func:`load_script` imports a script of ``scripts/`` by path (scripts are not a package).
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

# The CIFAR-10 pickle writer and md5 helper of the CIFAR loader tests, reused as they are.
from test_data_cifar import _md5, _write_batch
from torchvision import datasets

from balf_paper.data.fashion_mnist import FASHION_MNIST_FILES, write_idx

__all__ = [
    "REPO",
    "WNIDS",
    "accept_cifar10_checksums",
    "load_script",
    "write_cifar10",
    "write_cifar10c",
    "write_corrupted",
    "write_fashion_mnist",
    "write_fashion_mnist_c",
    "write_imagenet",
]

REPO = Path(__file__).resolve().parents[1]
WNIDS: tuple[str, ...] = ("n01440764", "n01443537", "n02119789")
_CIFAR_FOLDER = "cifar-10-batches-py"


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` labels covering every class when ``n >= 10``, in a seeded random order."""
    return rng.permutation(np.arange(n) % 10)


def write_cifar10(
    root: Path, train_per_batch: int = 4, test_images: int = 10, seed: int = 0
) -> Path:
    """Tiny CIFAR-10 in torchvision's layout (``data_batch_1..5``, ``test_batch``, meta).

    Args:
        root: folder that receives ``cifar-10-batches-py/``.
        train_per_batch: images in each of the five training pickles (train set: 5× this).
        test_images: images in ``test_batch``.

    Returns:
        ``root`` (what ``balf_paper.data.cifar10`` and ``--data-root`` take).
    """
    folder = Path(root) / _CIFAR_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(1, 6):
        images = rng.integers(0, 256, (train_per_batch, 32, 32, 3), dtype=np.uint8)
        _write_batch(folder / f"data_batch_{i}", images, _labels(rng, train_per_batch).tolist())
    images = rng.integers(0, 256, (test_images, 32, 32, 3), dtype=np.uint8)
    _write_batch(folder / "test_batch", images, _labels(rng, test_images).tolist())
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer"] + ["x"] * 5}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return Path(root)


def accept_cifar10_checksums(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Make torchvision's md5 check accept the files :func:`write_cifar10` wrote into ``root``.

    ``torchvision.datasets.CIFAR10`` compares every file with md5 sums hard-coded on the class
    (``train_list``, ``test_list``, ``meta``); for the test only, those class attributes are
    replaced by the fixture files' sums, so the check itself still runs unchanged.
    """
    folder = Path(root) / _CIFAR_FOLDER
    train = [[f"data_batch_{i}", _md5(folder / f"data_batch_{i}")] for i in range(1, 6)]
    monkeypatch.setattr(datasets.CIFAR10, "train_list", train)
    monkeypatch.setattr(
        datasets.CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]]
    )
    meta = {"filename": "batches.meta", "key": "label_names", "md5": _md5(folder / "batches.meta")}
    monkeypatch.setattr(datasets.CIFAR10, "meta", meta)


def write_corrupted(
    root: Path,
    corruptions: Sequence[str],
    block: int,
    image_shape: tuple[int, ...],
    seed: int = 0,
) -> Path:
    """A folder in the CIFAR-10-C layout: ``labels.npy`` ``(5·block,)`` int64 and one
    ``<corruption>.npy`` ``(5·block, *image_shape)`` uint8 per corruption (severities 1..5
    stacked, random pixels).

    Returns:
        ``root`` (what ``balf_paper.data.CIFAR10C`` and ``--corrupted-root`` take).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = _labels(rng, block)
    np.save(root / "labels.npy", np.tile(labels, 5).astype(np.int64))
    for corruption in corruptions:
        images = rng.integers(0, 256, (5 * block, *image_shape), dtype=np.uint8)
        np.save(root / f"{corruption}.npy", images)
    return root


def write_cifar10c(
    root: Path, corruptions: Sequence[str] = ("fog", "snow"), block: int = 10, seed: int = 0
) -> Path:
    """Tiny CIFAR-10-C: :func:`write_corrupted` with ``(32, 32, 3)`` RGB images."""
    return write_corrupted(root, corruptions, block, (32, 32, 3), seed)


def write_fashion_mnist_c(
    root: Path, corruptions: Sequence[str] = ("fog", "snow"), block: int = 10, seed: int = 0
) -> Path:
    """Tiny Fashion-MNIST-C: :func:`write_corrupted` with ``(28, 28)`` grayscale images."""
    return write_corrupted(root, corruptions, block, (28, 28), seed)


def write_fashion_mnist(root: Path, train: int = 40, test: int = 10, seed: int = 0) -> Path:
    """The four Fashion-MNIST IDX ``.gz`` files with ``train`` / ``test`` random 28×28 images.

    Returns:
        ``root`` (what ``balf_paper.data.FashionMNIST`` and ``--data-root`` take).
    """
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("test", test)):
        image_file, label_file = FASHION_MNIST_FILES[split]
        write_idx(Path(root) / image_file, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(Path(root) / label_file, _labels(rng, n).astype(np.uint8))
    return Path(root)


def write_imagenet(
    root: Path,
    wnids: Sequence[str] = WNIDS,
    calib_per_class: int = 2,
    val_per_class: int = 2,
    size: int = 24,
    seed: int = 0,
) -> Path:
    """``<root>/imagenet-calib/<wnid>/*.JPEG`` and ``<root>/imagenet-val/<wnid>/*.JPEG``.

    File names follow the real extractions (``<wnid>_<k>.JPEG`` for calibration,
    ``ILSVRC2012_val_<8 digits>.JPEG`` for validation); images are ``size``×``size`` RGB noise.

    Returns:
        ``root`` (the ``--data-root`` of the ImageNet scripts).
    """
    rng = np.random.default_rng(seed)
    number = 0
    for folder, per_class in (("imagenet-calib", calib_per_class), ("imagenet-val", val_per_class)):
        for wnid in wnids:
            directory = Path(root) / folder / wnid
            directory.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                number += 1
                name = f"ILSVRC2012_val_{number:08d}" if folder == "imagenet-val" else f"{wnid}_{k}"
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(directory / f"{name}.JPEG", "JPEG")
    return Path(root)


def load_script(relative_path: str) -> ModuleType:
    """Import ``scripts/<relative_path>`` as a module (its ``main`` does not run on import).

    Example:
        >>> load_script("cifar10/factorize_sweep.py").main(["--help"])
    """
    path = REPO / "scripts" / relative_path
    name = "script_" + relative_path.removesuffix(".py").replace("/", "_").replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def use_only_fixture_fashion_mnist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make Fashion-MNIST lookups find only the fixture files (no system or local copy)."""
    from balf_paper.data import fashion_mnist

    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "no-system-copy")
    monkeypatch.setattr(fashion_mnist, "LOCAL_DIR", tmp_path / "no-local-copy")


def tiny_sweep_args(data_root: Path, tmp_path: Path, calib_size: int = 8) -> list[str]:
    """Options of a sweep script for a seconds-long run on fixture data with random weights.

    8 calibration and 6 evaluation images, batches of 8, results and caches below ``tmp_path``.
    """
    return [
        *("--random-weights", "--data-root", str(data_root)),
        *("--calib-size", str(calib_size), "--eval-size", "6", "--batch-size", "8"),
        *("--no-progress", "--out-root", str(tmp_path / "results"), "--cache-root", str(tmp_path)),
    ]
