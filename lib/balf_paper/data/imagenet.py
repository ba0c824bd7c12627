"""ImageNet-1k as torchvision ``ImageFolder``s: ``imagenet-val/`` and ``imagenet-calib/``.

Both folders hold one sub-folder per WordNet id (``n01440764/`` ...) with JPEG files inside; they
are built from the official archives by ``scripts/imagenet/extract_val.py`` and
``scripts/imagenet/extract_calib.py``. Class indices are the sorted WordNet ids, which is the
order of torchvision's and timm's ImageNet-1k classifiers. The calibration folder keeps a
(possibly empty) folder for every class so that its class indices match the validation folder's
even when a small random sample misses a class; empty class folders are therefore allowed.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from balf.errors import DatasetNotFoundError

if TYPE_CHECKING:  # imported on use: scripts' --help stays fast
    from torchvision import datasets

__all__ = ["IMAGENET_NUM_CLASSES", "imagenet_folder", "is_wnid"]

logger = logging.getLogger(__name__)

IMAGENET_NUM_CLASSES = 1000

_WNID = re.compile(r"n\d{8}")
_SOURCE = (
    "Build it from the official ILSVRC2012 archives with scripts/imagenet/extract_val.sh "
    "(validation tar + devkit) or scripts/imagenet/extract_calib.sh (training tar)."
)


def is_wnid(name: str) -> bool:
    """Whether ``name`` is a WordNet noun id such as ``"n01440764"``."""
    return _WNID.fullmatch(name) is not None


def imagenet_folder(
    root: str | os.PathLike, transform: Callable[[Image.Image], Any] | None = None
) -> datasets.ImageFolder:
    """Open ``imagenet-val/`` or ``imagenet-calib/`` as an ``ImageFolder``.

    Args:
        root: the folder itself (e.g. ``datasets/imagenet-val``), holding one sub-folder per
            WordNet id.
        transform: applied to each PIL RGB image, e.g. the model's evaluation preprocessing
            (resize 256, centre crop 224, normalise → float tensor ``(3, 224, 224)``).

    Returns:
        ``torchvision.datasets.ImageFolder`` yielding ``(transform(image), class index)``;
        ``dataset.classes`` are the sorted WordNet ids.

    Raises:
        DatasetNotFoundError: if ``root`` does not exist, has no WordNet-id class folders, or
            holds no image at all; the message names the path, the layout and how to build it.

    Example:
        >>> val = imagenet_folder("datasets/imagenet-val", eval_preprocessing("resnet50").transform)
        >>> len(val), len(val.classes)
        (50000, 1000)
    """
    root = Path(root)
    layout = f"{root}/<wnid>/<image>.JPEG with one folder per WordNet id (e.g. {root}/n01440764/)"
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"ImageNet folder not found: {root}. Expected {layout}. {_SOURCE}"
        )
    class_dirs = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not class_dirs:
        raise DatasetNotFoundError(f"No class folders in {root}. Expected {layout}. {_SOURCE}")
    not_wnids = [name for name in class_dirs if not is_wnid(name)]
    if not_wnids:
        raise DatasetNotFoundError(
            f"{root} has folders that are not WordNet ids ({', '.join(not_wnids[:5])}"
            f"{', ...' if len(not_wnids) > 5 else ''}). Expected {layout}. {_SOURCE}"
        )
    from torchvision import datasets

    dataset = datasets.ImageFolder(str(root), transform=transform, allow_empty=True)
    if len(dataset) == 0:
        raise DatasetNotFoundError(f"No images in {root}. Expected {layout}. {_SOURCE}")
    if len(dataset.classes) != IMAGENET_NUM_CLASSES:
        logger.warning(
            "%s has %d class folders, not the %d of ImageNet-1k: class indices will not match "
            "pretrained classifiers",
            root,
            len(dataset.classes),
            IMAGENET_NUM_CLASSES,
        )
    logger.info("%s: %d images in %d classes", root, len(dataset), len(dataset.classes))
    return dataset
