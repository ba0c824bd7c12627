"""Corrupted copies of a calibration subset (calibration under distribution shift), cached on disk.

The paper's current robustness study calibrates on corrupted images and evaluates on the clean
test set. Only the calibration subset is corrupted (a few hundred to a few thousand images, so
this is cheap), with the same corruption code as the corrupted test sets
(:func:`balf_paper.data.corruptions.corrupt_images`, ImageNet-C severity constants).

Images are corrupted at the model's input geometry: the calibration dataset's own preprocessing
is split at ``ToTensor`` (:func:`raw_images`): the steps before it (ImageNet: resize 256, centre
crop 224) give the uint8 image that is corrupted, as ImageNet-C corrupts 224×224 crops; the
normalisation after it is applied to the corrupted pixels (:class:`NormalisedImages`).

Cache layout (one folder per clean calibration subset, named by its digest)::

    <root>/<tag>-<sha256 of the clean images, 12 hex>/
        manifest.json                 settings, and per set: shape, sha256, seconds
        <corruption>-s<severity>.npy  (N, H, W, 3) uint8

Each ``.npy`` is written to a temporary file and renamed, then listed in the manifest; a listed
file whose digest no longer matches is rebuilt with a warning.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from balf.errors import BALFError
from balf.io.atomic import atomic_json_dump, read_json_or_none
from balf_paper.data.corruptions import PACKAGE, _save_npy, corrupt_images, sha256_of
from balf_paper.data.image_folder import ImageFolderTensors, decode_image

if TYPE_CHECKING:  # imported on use: scripts' --help stays fast
    from torchvision import transforms as T

__all__ = ["NormalisedImages", "RawImages", "raw_images", "shifted_images", "tensor_steps"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass
class RawImages:
    """Calibration images before normalisation.

    Attributes:
        images: uint8 ``(N, H, W, 3)``; labels: int64 ``(N,)``.
        mean, std: the per-channel normalisation the model expects on ``[0, 1]`` images.
    """

    images: np.ndarray
    labels: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]


class NormalisedImages(Dataset):
    """uint8 ``(N, H, W, C)`` images as ``(float (C, H, W) normalised, label)`` items."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = (self.images[index].float().div_(255.0) - self._mean) / self._std
        return image, int(self.labels[index])


def tensor_steps(transform: Any) -> tuple[list[Any], T.Normalize]:
    """Split a ``Compose`` ending in ``ToTensor(), Normalize(mean, std)``.

    Returns:
        ``(steps before ToTensor, the Normalize)``.

    Raises:
        BALFError: another kind of transform (its pixels cannot be corrupted before
            normalisation).
    """
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", []))
    ok = (
        len(steps) >= 2 and isinstance(steps[-2], T.ToTensor) and isinstance(steps[-1], T.Normalize)
    )
    if not ok:
        raise BALFError(
            f"cannot corrupt calibration images preprocessed by {transform!r}: expected a "
            "Compose ending in ToTensor(), Normalize(mean, std)"
        )
    return steps[:-2], steps[-1]


def raw_images(dataset: Dataset) -> RawImages:
    """The uint8 images of a calibration set at the model's input size, and its normalisation.

    Supported (chosen by type): a ``Subset`` of either of the following; an
    :class:`~balf_paper.data.ImageFolderTensors` without extra transform (CIFAR-10 JPEG release); a
    torchvision dataset (``ImageFolder`` for ImageNet, ``CIFAR10``) whose ``transform`` ends in
    ``ToTensor(), Normalize``.

    Raises:
        BALFError: any other dataset type, or grayscale images.
    """
    indices: Sequence[int] | None = None
    base = dataset
    while isinstance(base, Subset):
        indices = [base.indices[i] for i in (indices or range(len(base.indices)))]
        base = base.dataset
    indices = list(range(len(base))) if indices is None else list(indices)  # type: ignore[arg-type]
    if isinstance(base, ImageFolderTensors):
        if base.transform is not None or base.channels != 3:
            raise BALFError("calibration under shift needs RGB images without extra transform")
        images = [decode_image(base.paths[i], 3).permute(1, 2, 0).numpy() for i in indices]
        labels = [int(base.targets[i]) for i in indices]
        mean, std = base._mean.flatten().tolist(), base._std.flatten().tolist()
    elif hasattr(base, "transform") and hasattr(base, "__getitem__"):
        pre, normalise = tensor_steps(base.transform)
        pil = copy.copy(base)
        from torchvision import transforms as T

        pil.transform = T.Compose(pre) if pre else None
        items = [pil[i] for i in indices]
        images = [np.asarray(image.convert("RGB"), dtype=np.uint8) for image, _ in items]
        labels = [int(label) for _, label in items]
        mean, std = list(normalise.mean), list(normalise.std)
    else:
        raise BALFError(
            f"calibration under shift cannot read raw images from a {type(base).__name__}; "
            "supported: ImageFolderTensors and torchvision datasets with a "
            "ToTensor + Normalize transform"
        )
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        raise BALFError(f"calibration images of several sizes {sorted(shapes)}")
    return RawImages(np.stack(images), np.asarray(labels, dtype=np.int64), tuple(mean), tuple(std))


def _package_version() -> str:
    try:
        return f"{PACKAGE}=={version(PACKAGE)}"
    except PackageNotFoundError:
        return f"{PACKAGE} (not installed)"


def shifted_images(
    root: str | Path,
    tag: str,
    raw: RawImages,
    corruption: str,
    severity: int,
    seed: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``raw.images`` with one corruption at one severity, from the cache or made and cached.

    Args:
        root: cache folder (created).
        tag: names the clean subset (e.g. ``cifar10-jpeg-resnet20-calib1024-seed0``).
        raw: the clean calibration images (:func:`raw_images`).
        corruption, severity: one of :data:`balf_paper.data.CORRUPTIONS`, 1..5.
        seed: seed of the corruption's randomness (noise, glass blur, ...).

    Returns:
        ``(uint8 (N, H, W, 3) corrupted images, manifest entry of the set)``; the entry holds
        the set's ``sha256``, ``shape``, ``seconds``, and the ``folder``.
    """
    clean = sha256_of(raw.images, raw.labels)
    folder = Path(root) / f"{tag}-{clean[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"tag": tag, "images": len(raw.images), "clean_sha256": clean, "seed": seed,
                "package": _package_version()}  # fmt: skip
    manifest = read_json_or_none(folder / MANIFEST)
    if manifest is None or manifest.get("settings") != settings:
        if manifest is not None:
            log.warning("%s: manifest of other settings; its sets are rebuilt", folder)
        manifest = {"settings": settings, "sets": {}}
    name = f"{corruption}-s{severity}"
    path = folder / f"{name}.npy"
    entry = manifest["sets"].get(name)
    if entry is not None and path.is_file():
        images = np.load(path)
        if sha256_of(images) == entry["sha256"]:
            return images, {**entry, "folder": str(folder)}
        log.warning("%s: contents do not match the manifest; rebuilt", path)
    start = time.perf_counter()
    images = corrupt_images(raw.images, corruption, severity, seed)
    _save_npy(images, path)
    entry = {"shape": list(images.shape), "sha256": sha256_of(images),
             "seconds": round(time.perf_counter() - start, 2)}  # fmt: skip
    manifest["sets"][name] = entry
    atomic_json_dump(manifest, folder / MANIFEST)
    log.info("%s: %s made in %.1f s", path, images.shape, entry["seconds"])
    return images, {**entry, "folder": str(folder)}
