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
  in WordNet-id folders; :func:`write_imagenet_c` and :func:`write_imagenet_v2` the ImageNet-C
  and ImageNet-V2 releases; :func:`write_imagenet_samples` the shared ``imagenet-samples`` folder.
- :func:`write_cifar10_jpeg`: the JPEG release of CIFAR-10 (``{train,test}/<class>/*.jpg``).

:func:`load_script` imports a script of ``scripts/`` by path (scripts are not a package).
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import datasets

from balf_paper.data import CIFAR10_CLASSES
from balf_paper.data.fashion_mnist import FASHION_MNIST_FILES, write_idx

__all__ = [
    "IMAGENET_SAMPLES_TRAIN",
    "IMAGENET_SAMPLES_VAL",
    "IMAGENET_SAMPLES_WNIDS",
    "REPO",
    "WNIDS",
    "accept_cifar10_checksums",
    "load_script",
    "md5_of",
    "write_cifar10",
    "write_cifar10_batch",
    "write_cifar10_jpeg",
    "write_cifar10c",
    "write_corrupted",
    "write_fashion_mnist",
    "write_fashion_mnist_c",
    "write_flat_jpeg",
    "write_imagenet",
    "write_imagenet_c",
    "write_imagenet_samples",
    "write_imagenet_v2",
    "write_noise_jpeg",
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
        labels = _labels(rng, train_per_batch).tolist()
        write_cifar10_batch(folder / f"data_batch_{i}", images, labels)
    images = rng.integers(0, 256, (test_images, 32, 32, 3), dtype=np.uint8)
    write_cifar10_batch(folder / "test_batch", images, _labels(rng, test_images).tolist())
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
    train = [[f"data_batch_{i}", md5_of(folder / f"data_batch_{i}")] for i in range(1, 6)]
    monkeypatch.setattr(datasets.CIFAR10, "train_list", train)
    monkeypatch.setattr(
        datasets.CIFAR10, "test_list", [["test_batch", md5_of(folder / "test_batch")]]
    )
    meta_md5 = md5_of(folder / "batches.meta")
    meta = {"filename": "batches.meta", "key": "label_names", "md5": meta_md5}
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


def md5_of(path: Path) -> str:
    """The md5 hex digest of a file (what torchvision compares)."""
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar10_batch(path: Path, images: np.ndarray, labels: list[int]) -> None:
    """One pickle as in cifar-10-python.tar.gz: rows of 3072 bytes = R plane, G plane, B plane."""
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # (N, 32, 32, 3) -> (N, 3072)
    entry = {"batch_label": path.name, "labels": labels, "data": rows, "filenames": []}
    path.write_bytes(pickle.dumps(entry))


def write_cifar10_jpeg(root: Path, train: int = 2, test: int = 1, size: int = 32) -> Path:
    """``root/{train,test}/<class>/<NNNN>.jpg``: ``train``/``test`` random JPEGs per class."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", train), ("test", test)):
        for name in CIFAR10_CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)
    return root


def write_flat_jpeg(path: Path, value: int, size: int = 24) -> None:
    """A ``size``×``size`` JPEG of one grey value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path, "JPEG")


def write_imagenet_c(
    root: Path, wnids: Sequence[str], sets: Mapping[str, Sequence[int]], per_class: int = 1
) -> Path:
    """``root/<corruption>/<severity>/<wnid>/*.JPEG`` (224×224 like the release)."""
    for corruption, severities in sets.items():
        for severity in severities:
            for c, wnid in enumerate(wnids):
                for k in range(per_class):
                    name = f"ILSVRC2012_val_{c * per_class + k + 1:08d}.JPEG"
                    write_flat_jpeg(root / corruption / str(severity) / wnid / name, 10 * c, 224)
    return root


def write_imagenet_v2(parent: Path, classes: Sequence[int], variant: str = "matched-frequency"):
    """``parent/imagenetv2-<variant>-format-val/<class index>/*.jpeg``; pixels = index % 256."""
    folder = parent / f"imagenetv2-{variant}-format-val"
    for index in classes:
        for k in range(2):
            write_flat_jpeg(folder / str(index) / f"{k:040x}.jpeg", index % 256)
    return parent


IMAGENET_SAMPLES_WNIDS = [f"n{i:08d}" for i in range(1000)]
# (file, class index): three validation images in two classes, one class index > 725
IMAGENET_SAMPLES_VAL = [
    ("ILSVRC2012_val_00000347.JPEG", 3),
    ("ILSVRC2012_val_00000355.JPEG", 999),
    ("ILSVRC2012_val_00000361.JPEG", 3),
]
IMAGENET_SAMPLES_TRAIN = ["n00000000_tench.JPEG", "n00000005_goldfish.JPEG"]


def write_noise_jpeg(path: Path, seed: int) -> None:
    """A 12×12 JPEG of seeded noise."""
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG")


def write_imagenet_samples(root: Path) -> Path:
    """A miniature ``imagenet-samples`` folder in the shared layout (``val1300/`` +
    ``val1300_labels.txt`` with :data:`IMAGENET_SAMPLES_VAL`, ``train1000/`` with
    :data:`IMAGENET_SAMPLES_TRAIN`, ``synset_words.txt`` of :data:`IMAGENET_SAMPLES_WNIDS`)."""
    (root / "val1300").mkdir(parents=True)
    (root / "train1000").mkdir()
    lines = [f"{w} class number {i}, a synonym" for i, w in enumerate(IMAGENET_SAMPLES_WNIDS)]
    (root / "synset_words.txt").write_text("\n".join(lines) + "\n")
    labels = "".join(f"{n}, {k}\n" for n, k in IMAGENET_SAMPLES_VAL)
    (root / "val1300_labels.txt").write_text(labels)
    for i, (name, _) in enumerate(IMAGENET_SAMPLES_VAL):
        write_noise_jpeg(root / "val1300" / name, i)
    for i, name in enumerate(IMAGENET_SAMPLES_TRAIN):
        write_noise_jpeg(root / "train1000" / name, 100 + i)
    return root


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


#: Rank-deficient layer inputs ``(name, make_layer(dtype), make_x(dtype))``: fewer rows than
#: inputs, dead channels, duplicated features, no signal at all (spectra and energies tests).
RANK_DEFICIENT = [
    (
        "fewer-rows-than-D",
        lambda dt: nn.Linear(12, 9, dtype=dt),
        lambda dt: torch.randn(5, 12, dtype=dt),
    ),
    (
        "dead-channels",
        lambda dt: nn.Conv2d(4, 6, 3, padding=1, dtype=dt),
        lambda dt: (
            torch.randn(3, 4, 6, 6, dtype=dt)
            * torch.tensor([1.0, 0, 1, 0], dtype=dt).view(1, 4, 1, 1)
        ),
    ),
    (
        "duplicated-features",
        lambda dt: nn.Linear(8, 10, dtype=dt),
        lambda dt: torch.randn(30, 4, dtype=dt).repeat(1, 2),
    ),
    (
        "all-zero-inputs",
        lambda dt: nn.Linear(6, 5, bias=False, dtype=dt),
        lambda dt: torch.zeros(7, 6, dtype=dt),
    ),
]
