"""Corrupted test sets in the CIFAR-10-C layout (15 corruptions × 5 severities), reproducibly.

Output of :func:`make_corrupted`, read by :class:`balf_paper.data.CIFAR10C`::

    <out>/labels.npy          (5·N,) int64: the N test labels, repeated for severities 1..5
    <out>/<corruption>.npy    (5·N, H, W) or (5·N, H, W, 3) uint8: severity 1, then 2, ... 5
    <out>/manifest.json       the settings, and every corruption completed (seconds, sha256)

Corruptions come from ``imagecorruptions-imaug`` (import name ``imagecorruptions``), the maintained
fork of ``imagecorruptions`` (Michaelis et al.), which packages Hendrycks & Dietterich's reference
code: ``corrupt(image, corruption_name=..., severity=...)``. Its severity constants are those of
ImageNet-C, written for any image size; CIFAR-10-C was made with a separate, milder set of
constants, so a severity here is harsher than the same severity of the published CIFAR-10-C.
The same code makes Fashion-MNIST-C (``scripts/fashion_mnist/make_corrupted.py``) and the
CIFAR-10-C of the JPEG release (``scripts/cifar10/make_corrupted.py``).

Reproducible: ``np.random`` (which the package draws from) is seeded per (corruption, severity)
from ``(seed, corruption index, severity)``; glass blur and impulse noise take an explicit
per-image seed drawn from the same seed sequence.

Atomic and resumable: each ``.npy`` is written to a temporary file and renamed; the manifest is
updated after each corruption, and a rerun skips the corruptions the manifest lists with the same
settings. A folder made with other settings is refused unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from balf.errors import BALFError
from balf.io.atomic import atomic_json_dump, atomic_write_bytes, read_json_or_none
from balf_paper.data.cifar import CORRUPTIONS, SEVERITIES

__all__ = ["PACKAGE", "corrupt_images", "corrupt_test_set", "make_corrupted", "sha256_of"]

logger = logging.getLogger(__name__)

PACKAGE = "imagecorruptions-imaug"
MANIFEST = "manifest.json"
MIN_SIDE = 32  # the package's minimum image side
PAD = 2  # Fashion-MNIST: 28 + 2·2 = 32
_SEEDED = ("glass_blur", "impulse_noise")  # take a per-call seed instead of np.random


def corrupt_images(
    images: np.ndarray, corruption: str, severity: int, seed: int, progress: bool = False
) -> np.ndarray:
    """Apply one corruption at one severity to grayscale or RGB images, reproducibly.

    Grayscale images smaller than 32×32 are padded by reflection to at least 32×32 (the package's
    minimum), stacked into three identical RGB channels, corrupted, cropped back, and channel 0
    is kept. RGB images (``(N, H, W, 3)``, at least 32×32, e.g. CIFAR-10) are corrupted as they are.

    Args:
        images: ``(N, H, W)`` uint8 grayscale or ``(N, H, W, 3)`` uint8 RGB images.
        corruption: one of :data:`balf_paper.data.CORRUPTIONS`.
        severity: 1..5.
        seed: base seed; the draw depends on ``(seed, corruption, severity)`` only.
        progress: show a tqdm bar over the images.

    Returns:
        uint8 images of the input's shape.

    Raises:
        BALFError: unknown corruption or severity, or images of another shape/dtype.
    """
    from imagecorruptions import corrupt

    if corruption not in CORRUPTIONS:
        raise BALFError(f"unknown corruption {corruption!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise BALFError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    rgb_input = images.ndim == 4 and images.shape[-1] == 3
    if images.dtype != np.uint8 or not (images.ndim == 3 or rgb_input):
        raise BALFError(
            f"expected uint8 images (N, H, W) or (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    sequence = np.random.SeedSequence([seed, CORRUPTIONS.index(corruption), severity])
    np.random.seed(sequence.generate_state(1)[0])
    image_seeds = np.random.default_rng(sequence).integers(0, 2**31 - 1, len(images))
    height, width = images.shape[1:3]
    pad = max(0, -(-(MIN_SIDE - min(height, width)) // 2))
    out = np.empty_like(images)
    desc = f"{corruption} s{severity}"
    for i, image in enumerate(tqdm(images, desc=desc, leave=False, disable=not progress)):
        widths = ((pad, pad), (pad, pad)) + (((0, 0),) if rgb_input else ())
        padded = np.pad(image, widths, mode="reflect") if pad else image
        rgb = padded if rgb_input else np.stack([padded] * 3, axis=-1)
        kwargs = {"seed": int(image_seeds[i])} if corruption in _SEEDED else {}
        result = corrupt(
            np.ascontiguousarray(rgb), corruption_name=corruption, severity=severity, **kwargs
        )
        result = np.asarray(result)[pad : pad + height, pad : pad + width]
        out[i] = result if rgb_input else result[..., 0]
    return out


def _save_npy(array: np.ndarray, path: Path) -> None:
    """``np.save`` through a temporary file in the same folder and a rename."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(buffer.getvalue(), path)


def sha256_of(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _start(out: Path, settings: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """The manifest to continue from: the existing one if its settings match, else a new one."""
    manifest = read_json_or_none(out / MANIFEST)
    fresh = {"settings": settings, "corruptions": {}}
    if manifest is not None and manifest.get("settings") == settings:
        return manifest
    existing = sorted(p.name for p in out.glob("*.npy")) if out.is_dir() else []
    if existing and not overwrite:
        found = "no manifest" if manifest is None else f"settings {manifest.get('settings')}"
        raise BALFError(
            f"{out} holds {', '.join(existing[:3])}{', ...' if len(existing) > 3 else ''} made "
            f"with other settings ({found}) than requested ({settings}). Pass --overwrite to "
            "rebuild it, or choose another --out folder."
        )
    for name in existing:  # --overwrite: no file of the old settings may survive
        (out / name).unlink()
    return fresh


def make_corrupted(
    out: Path,
    images: np.ndarray,
    labels: np.ndarray,
    corruptions: Sequence[str],
    seed: int,
    settings: dict[str, Any],
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``labels.npy`` and one ``<corruption>.npy`` per corruption into ``out``.

    Args:
        out: output folder (created).
        images: ``(N, H, W)`` or ``(N, H, W, 3)`` uint8 clean images; labels: ``(N,)`` ints.
        corruptions: names from :data:`balf_paper.data.CORRUPTIONS`.
        seed: base seed of the corruptions.
        settings: what defines the output (compared with the manifest of an earlier run).
        overwrite: rebuild a folder made with other settings.

    Returns:
        The manifest written to ``out/manifest.json``.
    """
    out.mkdir(parents=True, exist_ok=True)
    manifest = _start(out, settings, overwrite)
    _save_npy(np.tile(labels.astype(np.int64), len(SEVERITIES)), out / "labels.npy")
    for corruption in corruptions:
        path = out / f"{corruption}.npy"
        if corruption in manifest["corruptions"] and path.is_file():
            logger.info("%s: done already, skipped", path)
            continue
        start = time.perf_counter()
        blocks, seconds = [], {}
        for severity in SEVERITIES:
            t = time.perf_counter()
            blocks.append(corrupt_images(images, corruption, severity, seed, progress))
            seconds[str(severity)] = round(time.perf_counter() - t, 2)
        array = np.concatenate(blocks)
        _save_npy(array, path)
        total = time.perf_counter() - start
        manifest["corruptions"][corruption] = {
            "seconds": round(total, 2),
            "seconds_per_severity": seconds,
            "shape": list(array.shape),
            "sha256": sha256_of(array),
        }
        atomic_json_dump(manifest, out / MANIFEST)
        logger.info("%s: %s in %.1f s", path, array.shape, total)
    atomic_json_dump(manifest, out / MANIFEST)
    return manifest


def corrupt_test_set(
    out: Path,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    corruptions: Sequence[str],
    seed: int,
    subset: int | None,
    settings: dict[str, Any],
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """:func:`make_corrupted` on a whole test set or a seeded ``subset`` of it.

    ``settings`` names the source (format, source, padding, ...); the image count, subset, seed,
    digest of the clean images and the corruption package's version are added here.
    """
    from balf_paper.data.common import random_indices

    if subset is not None:
        indices = np.asarray(random_indices(len(images), subset, seed))
        images, labels = images[indices], labels[indices]
    settings = {
        **settings,
        "images": len(images),
        "subset": subset,
        "seed": seed,
        "clean_sha256": sha256_of(images, labels.astype(np.int64)),
        "package": f"{PACKAGE}=={version(PACKAGE)}",
    }
    logger.info("corrupting %d images (%s) into %s", len(images), settings.get("source"), out)
    return make_corrupted(
        out, images, labels, corruptions, seed, settings, overwrite=overwrite, progress=progress
    )
