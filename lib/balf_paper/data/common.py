"""Dataset helpers shared by every data set: seeded subsets, loaders, the evaluation transform.

Calibration and evaluation subsets are drawn the same way for CIFAR-10, Fashion-MNIST and
ImageNet: a seeded uniform random permutation of the dataset's indices, of which the first
``size`` are kept (then sorted, so files are read in on-disk order). Taking a prefix of one
permutation makes subsets of the same seed *nested*: the 256-image calibration set is contained in
the 1024-image one, which is what the calibration-size sweep wants.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from balf.errors import BALFError

if TYPE_CHECKING:  # imported on use: scripts' --help stays fast
    from torchvision import transforms as T

__all__ = [
    "calibration_subset",
    "evaluation_subset",
    "eval_transform",
    "make_loader",
    "random_indices",
]

logger = logging.getLogger(__name__)


def random_indices(num_items: int, size: int, seed: int) -> list[int]:
    """Draw ``size`` distinct indices uniformly at random from ``range(num_items)``.

    The draw depends only on ``(num_items, size, seed)``: the first ``size`` entries of
    ``torch.randperm(num_items)`` under a CPU generator seeded with ``seed``, sorted ascending.
    For a fixed seed, a smaller draw is a subset of a larger one.

    Args:
        num_items: number of items to choose from (``len(dataset)``).
        size: number of indices to draw, ``1 <= size <= num_items``.
        seed: seed of the generator.

    Returns:
        Sorted list of ``size`` distinct ints in ``[0, num_items)``.

    Raises:
        BALFError: if ``size`` is not in ``[1, num_items]``.

    Example:
        >>> random_indices(10, 3, seed=0) == random_indices(10, 3, seed=0)
        True
    """
    if not 1 <= size <= num_items:
        raise BALFError(
            f"subset size must be between 1 and the dataset size {num_items}, got {size}"
        )
    generator = torch.Generator().manual_seed(seed)
    permutation = torch.randperm(num_items, generator=generator)
    return sorted(permutation[:size].tolist())


def calibration_subset(dataset: Dataset, size: int, seed: int = 0) -> Subset:
    """Seeded, uniformly random, reproducible subset of ``dataset`` for calibration.

    Args:
        dataset: any map-style dataset with ``__len__`` (CIFAR-10 train set, ``imagenet-calib``...).
        size: number of samples, e.g. 1024 for CIFAR-10 or 8192 for ImageNet.
        seed: seed of the draw; the same ``(len(dataset), size, seed)`` always gives the same
            indices, and different seeds give different subsets.

    Returns:
        ``torch.utils.data.Subset`` of ``size`` samples; items are those of ``dataset``
        (e.g. ``(image (C, H, W), label)``). ``subset.indices`` is sorted.

    Raises:
        BALFError: if ``size`` is not in ``[1, len(dataset)]``.

    Example:
        >>> calib = calibration_subset(cifar10("datasets", train=True), 1024, seed=0)
        >>> len(calib)
        1024
    """
    indices = random_indices(len(dataset), size, seed)
    logger.debug("calibration subset: %d of %d items (seed %d)", size, len(dataset), seed)
    return Subset(dataset, indices)


def evaluation_subset(dataset: Dataset, size: int | None = None, seed: int = 0) -> Subset:
    """Evaluation set: the whole dataset, or a seeded random subset for quick runs.

    Args:
        dataset: any map-style dataset with ``__len__``.
        size: number of samples; ``None`` (or ``size >= len(dataset)``) keeps every sample in order.
        seed: seed of the draw when a proper subset is requested.

    Returns:
        ``torch.utils.data.Subset`` with sorted indices (a ``Subset`` also for the full set).

    Raises:
        BALFError: if ``size < 1``.

    Example:
        >>> len(evaluation_subset(cifar10("datasets", train=False)))
        10000
    """
    if size is None or size >= len(dataset):
        return Subset(dataset, list(range(len(dataset))))
    return Subset(dataset, random_indices(len(dataset), size, seed))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int = 0,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """Build a ``DataLoader`` with the repository's conventions.

    Evaluation and calibration use the default ``shuffle=False`` (deterministic order). Training
    passes ``shuffle=True`` and a ``seed`` so the sample order is reproducible.

    Args:
        dataset: map-style dataset yielding e.g. ``(image (C, H, W), label)``.
        batch_size: samples per batch (``>= 1``).
        workers: number of worker processes (0 = load in the main process).
        shuffle: reshuffle every epoch.
        seed: seed of the shuffling generator (ignored when ``shuffle`` is False).
        drop_last: drop the last incomplete batch.
        pin_memory: pin host memory (useful when copying batches to a GPU).

    Returns:
        A ``DataLoader`` yielding collated batches, e.g. ``(images (B, C, H, W), labels (B,))``.

    Raises:
        BALFError: if ``batch_size < 1`` or ``workers < 0``.

    Example:
        >>> loader = make_loader(calibration_subset(train_set, 1024), batch_size=128, workers=2)
    """
    if batch_size < 1:
        raise BALFError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise BALFError(f"workers must be >= 0, got {workers}")
    generator = torch.Generator().manual_seed(seed) if shuffle and seed is not None else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=generator,
        drop_last=drop_last,
        pin_memory=pin_memory,
    )


def eval_transform(mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """Evaluation transform: PIL image / HWC uint8 → normalised CHW float tensor.

    Args:
        mean: per-channel mean of the images scaled to [0, 1] (length C).
        std: per-channel standard deviation (length C).

    Returns:
        ``ToTensor`` followed by ``Normalize(mean, std)``: an ``(H, W, C)`` uint8 image becomes a
        float32 tensor ``(C, H, W)``.

    Example:
        >>> eval_transform((0.5,), (0.5,))(PIL.Image.new("L", (28, 28))).shape
        torch.Size([1, 28, 28])
    """
    from torchvision import transforms as T

    return T.Compose([T.ToTensor(), T.Normalize(tuple(mean), tuple(std))])
