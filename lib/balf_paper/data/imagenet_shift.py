"""ImageNet-C and ImageNet-V2 as datasets with ImageNet-1k class indices.

**ImageNet-C** (Hendrycks & Dietterich, 2019): 224×224 corrupted copies of the 50,000 validation
images, laid out as ``<root>/<corruption>/<severity>/<wnid>/*.JPEG`` (severity ``1`` … ``5``),
19 corruptions in five groups (:data:`IMAGENET_C_GROUPS`: noise, blur, weather, digital and the
four "extra" ones). Its images are already centre crops at the model's input size, so the usual
resize-256 / crop-224 must not be applied again: pass only ``ToTensor`` and ``Normalize``
(:func:`balf_paper.data.shifted_calibration.tensor_steps` splits a model's preprocessing there).

**ImageNet-V2** (Recht et al., 2019): new test sets of 10,000 images, released as
``imagenetv2-<variant>-format-val/<class index>/*.jpeg`` with ``variant`` one of
:data:`IMAGENET_V2_VARIANTS`. Its class folders are the class *indices* ``0`` … ``999``;
sorting them as text (what ``torchvision.datasets.ImageFolder`` does) would give folder ``10``
index 2, so they are mapped numerically here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from torch.utils.data import Dataset

from balf.errors import BALFError, DatasetNotFoundError
from balf_paper.data.imagenet import IMAGENET_NUM_CLASSES, imagenet_folder

if TYPE_CHECKING:  # imported on use: scripts' --help stays fast
    from torchvision import datasets

__all__ = [
    "IMAGENET_C_CORRUPTIONS",
    "IMAGENET_C_GROUPS",
    "IMAGENET_V2_VARIANTS",
    "ImageNetV2",
    "imagenet_c",
    "imagenet_c_group",
    "imagenet_v2",
]

IMAGENET_C_GROUPS: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    "extra": ("speckle_noise", "gaussian_blur", "spatter", "saturate"),
}
"""ImageNet-C's corruptions by group, in the benchmark's order (the first four groups are the
15 of CIFAR-10-C; ``extra`` are the held-out ones)."""

IMAGENET_C_CORRUPTIONS: tuple[str, ...] = tuple(c for g in IMAGENET_C_GROUPS.values() for c in g)
IMAGENET_V2_VARIANTS: tuple[str, ...] = ("matched-frequency", "threshold0.7", "top-images")
_C_SOURCE = (
    "ImageNet-C is published at https://zenodo.org/record/2235448 (one tar per group: noise, "
    "blur, weather, digital, extra); extract them into one folder."
)
_V2_SOURCE = (
    "ImageNet-V2 is published on the Hugging Face Hub (vaishaal/ImageNetV2, files "
    "imagenetv2-<variant>.tar.gz); extract it to get imagenetv2-<variant>-format-val/."
)


def imagenet_c_group(corruption: str) -> str:
    """The group (noise, blur, weather, digital, extra) of an ImageNet-C corruption."""
    for group, members in IMAGENET_C_GROUPS.items():
        if corruption in members:
            return group
    raise BALFError(
        f"unknown ImageNet-C corruption {corruption!r}; "
        f"choose from {', '.join(IMAGENET_C_CORRUPTIONS)}"
    )


def imagenet_c(
    root: str | os.PathLike,
    corruption: str,
    severity: int,
    transform: Callable[[Image.Image], Any] | None = None,
) -> datasets.ImageFolder:
    """One ImageNet-C set: ``<root>/<corruption>/<severity>/<wnid>/*.JPEG``.

    Args:
        root: the folder holding one sub-folder per corruption.
        corruption: one of :data:`IMAGENET_C_CORRUPTIONS`; severity: 1 … 5.
        transform: applied to each 224×224 PIL image (``ToTensor`` + ``Normalize`` only).

    Returns:
        An ``ImageFolder`` whose class indices are the sorted WordNet ids (ImageNet-1k order).

    Raises:
        BALFError: unknown corruption or severity.
        DatasetNotFoundError: the set's folder is missing or not in the layout.
    """
    imagenet_c_group(corruption)
    if severity not in (1, 2, 3, 4, 5):
        raise BALFError(f"ImageNet-C severity must be 1..5, got {severity!r}")
    folder = Path(root) / corruption / str(severity)
    if not folder.is_dir():
        raise DatasetNotFoundError(
            f"ImageNet-C set not found: {folder}. Expected {root}/<corruption>/<severity>/"
            f"<wnid>/*.JPEG. {_C_SOURCE}"
        )
    return imagenet_folder(folder, transform)


def _v2_folder(root: Path, variant: str | None) -> Path:
    if variant is not None and variant not in IMAGENET_V2_VARIANTS:
        raise BALFError(
            f"unknown ImageNet-V2 variant {variant!r}; "
            f"choose from {', '.join(IMAGENET_V2_VARIANTS)}"
        )
    if root.name.startswith("imagenetv2-") and root.name.endswith("-format-val"):
        return root
    variant = variant or IMAGENET_V2_VARIANTS[0]
    return root / f"imagenetv2-{variant}-format-val"


class ImageNetV2(Dataset):
    """ImageNet-V2: folder ``k`` holds images of ImageNet-1k class ``k`` (numeric, not sorted text).

    Args:
        root: the ``imagenetv2-<variant>-format-val`` folder, or the folder holding it.
        variant: with a parent ``root``: which release (default ``matched-frequency``).
        transform: applied to each PIL RGB image (e.g. the model's preprocessing).

    Items are ``(transform(image), class index)``. Attributes: ``samples`` (path, index) pairs
    sorted by class then file name; ``targets``.

    Raises:
        DatasetNotFoundError: missing folder, a class folder whose name is not an integer in
            0 … 999, or no images.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        variant: str | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        folder = _v2_folder(Path(root), variant)
        layout = f"{folder}/<0..999>/*.jpeg (one folder per ImageNet-1k class index)"
        if not folder.is_dir():
            raise DatasetNotFoundError(f"ImageNet-V2 not found: {folder}. Expected {layout}. "
                                       f"{_V2_SOURCE}")  # fmt: skip
        names = sorted(e.name for e in os.scandir(folder) if e.is_dir())
        bad = [n for n in names if not n.isdigit() or int(n) >= IMAGENET_NUM_CLASSES]
        if bad or not names:
            found = ", ".join(bad[:5]) if bad else "no class folders"
            raise DatasetNotFoundError(f"{folder}: {found}. Expected {layout}. {_V2_SOURCE}")
        self.root, self.transform = folder, transform
        self.samples = [
            (path, int(name))
            for name in sorted(names, key=int)
            for path in sorted((folder / name).iterdir())
            if path.suffix.lower() in (".jpeg", ".jpg", ".png")
        ]
        if not self.samples:
            raise DatasetNotFoundError(f"No images in {folder}. Expected {layout}.")
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        with Image.open(path) as image:
            image = image.convert("RGB")
        return (self.transform(image) if self.transform else image), label


def imagenet_v2(
    root: str | os.PathLike,
    variant: str | None = None,
    transform: Callable[[Image.Image], Any] | None = None,
) -> ImageNetV2:
    """:class:`ImageNetV2` (see there)."""
    return ImageNetV2(root, variant, transform)
