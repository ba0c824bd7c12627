"""Reading the official ILSVRC2012 archives without extracting them.

Used by ``scripts/imagenet/extract_val.py`` and ``scripts/imagenet/extract_calib.py``:

- the devkit ``ILSVRC2012_devkit_t12.tar.gz``: ``data/ILSVRC2012_validation_ground_truth.txt``
  lists the 1-based ILSVRC id of ``ILSVRC2012_val_00000001.JPEG``, ``..._00000002.JPEG``, ...;
  ``data/meta.mat`` maps ILSVRC ids to WordNet ids in its ``synsets`` struct array (the 1000
  leaf synsets, ``num_children == 0``, are the classes). ``meta.mat`` is read by the small
  level-5 MAT reader in :mod:`balf_paper.data._matfile`, so SciPy is not needed.
- the training archive ``ILSVRC2012_img_train.tar``: a tar of per-class ``<wnid>.tar`` files.
  :func:`index_train_archive` lists every image with its byte offset by reading tar headers only
  (seeking over the image data), so a sample can be copied out without unpacking 140 GB.

The scripts' shared run helpers (manifest, idempotent reruns, staged output folders, options)
live in :mod:`balf_paper.data.extraction` and are re-exported here.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from balf.errors import BALFError, DatasetNotFoundError
from balf_paper.data._matfile import read_mat
from balf_paper.data.common import random_indices
from balf_paper.data.imagenet import is_wnid

__all__ = [
    "TrainImage",
    "index_train_archive",
    "parse_meta_mat",
    "parse_val_ground_truth",
    "read_devkit",
    "sample_train_images",
    "val_image_number",
]

GROUND_TRUTH_MEMBER = "data/ILSVRC2012_validation_ground_truth.txt"
META_MEMBER = "data/meta.mat"
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")


def parse_val_ground_truth(text: str) -> list[int]:
    """Parse the devkit's validation ground truth.

    Args:
        text: content of ``ILSVRC2012_validation_ground_truth.txt``, one integer per line.

    Returns:
        ILSVRC ids (1-based) in image order: entry ``i`` is the class of image number ``i + 1``.

    Raises:
        BALFError: if a line is not an integer.

    Example:
        >>> parse_val_ground_truth("65\\n970\\n")
        [65, 970]
    """
    try:
        return [int(line) for line in text.split()]
    except ValueError as exc:
        raise BALFError(f"validation ground truth must hold one integer per line: {exc}") from exc


def parse_meta_mat(data: bytes) -> dict[int, str]:
    """Map ILSVRC ids to WordNet ids from the devkit's ``meta.mat``.

    Args:
        data: content of ``meta.mat`` (a level-5 MAT file with a ``synsets`` struct array whose
            fields include ``ILSVRC2012_ID``, ``WNID`` and ``num_children``).

    Returns:
        ``{ILSVRC id: WordNet id}`` for the leaf synsets (``num_children == 0``): the 1000
        classes in the real devkit.

    Raises:
        BALFError: if ``synsets`` or one of its fields is missing, or a WNID is malformed.
    """
    variables = read_mat(data)
    if "synsets" not in variables:
        raise BALFError(f"meta.mat has no 'synsets' variable (found: {sorted(variables)})")
    mapping: dict[int, str] = {}
    for synset in variables["synsets"]:
        try:
            num_children = int(np.asarray(synset["num_children"]).item())
            ilsvrc_id = int(np.asarray(synset["ILSVRC2012_ID"]).item())
            wnid = synset["WNID"]
        except (KeyError, TypeError, ValueError) as exc:
            raise BALFError(f"malformed synset in meta.mat: {synset!r}") from exc
        if num_children == 0:
            if not isinstance(wnid, str) or not is_wnid(wnid):
                raise BALFError(f"meta.mat synset {ilsvrc_id} has an invalid WNID {wnid!r}")
            mapping[ilsvrc_id] = wnid
    return mapping


def read_devkit(devkit: Path) -> list[str]:
    """WordNet id of every validation image, read from the devkit archive in memory.

    Args:
        devkit: ``ILSVRC2012_devkit_t12.tar.gz``.

    Returns:
        List whose entry ``i`` is the WordNet id of ``ILSVRC2012_val_{i + 1:08d}.JPEG``.

    Raises:
        DatasetNotFoundError: if the archive or one of the two member files is missing.
        BALFError: if the ground truth names an id that ``meta.mat`` does not define.
    """
    if not devkit.is_file():
        raise DatasetNotFoundError(
            f"ImageNet devkit not found: {devkit}. Download ILSVRC2012_devkit_t12.tar.gz "
            "(Development kit, Task 1 & 2) from https://image-net.org/ and pass its path."
        )
    contents: dict[str, bytes] = {}
    with tarfile.open(devkit, "r:*") as tar:
        for member in tar:
            for wanted in (GROUND_TRUTH_MEMBER, META_MEMBER):
                if member.isfile() and PurePosixPath(member.name).match(f"*/{wanted}"):
                    contents[wanted] = tar.extractfile(member).read()
    missing = [name for name in (GROUND_TRUTH_MEMBER, META_MEMBER) if name not in contents]
    if missing:
        raise DatasetNotFoundError(
            f"{devkit} lacks ILSVRC2012_devkit_t12/{' and ILSVRC2012_devkit_t12/'.join(missing)}; "
            "is it the ILSVRC2012 devkit (ILSVRC2012_devkit_t12.tar.gz)?"
        )
    id_to_wnid = parse_meta_mat(contents[META_MEMBER])
    ids = parse_val_ground_truth(contents[GROUND_TRUTH_MEMBER].decode("ascii"))
    unknown = sorted(set(ids) - set(id_to_wnid))
    if unknown:
        raise BALFError(
            f"{devkit}: ground-truth ids {unknown[:5]} are not leaf synsets of meta.mat"
        )
    return [id_to_wnid[i] for i in ids]


def val_image_number(name: str) -> int | None:
    """Number of a validation file (``ILSVRC2012_val_00000042.JPEG`` → 42), else None."""
    match = _VAL_NAME.fullmatch(PurePosixPath(name).name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class TrainImage:
    """One image of the training archive: class, file name and where its bytes lie in the tar.

    Attributes:
        wnid: WordNet id of the class (name of the inner ``<wnid>.tar``).
        name: file name, e.g. ``n01440764_10026.JPEG``.
        offset: byte offset of the image data in the outer archive.
        size: number of bytes of the image.
    """

    wnid: str
    name: str
    offset: int
    size: int


def index_train_archive(
    train_tar: Path, progress: bool = True
) -> tuple[list[str], list[TrainImage]]:
    """List every image of ``ILSVRC2012_img_train.tar`` by reading tar headers only.

    Args:
        train_tar: the training archive: a plain tar of per-class ``<wnid>.tar`` files.
        progress: show a tqdm bar over the classes.

    Returns:
        ``(wnids, images)``: the sorted WordNet ids of all inner tars (also of classes without
        images) and every image sorted by ``(wnid, name)``, so that the result does not depend on
        the order of the archive.

    Raises:
        DatasetNotFoundError: if the archive does not exist.
        BALFError: if a member is not a ``<wnid>.tar`` file.
    """
    if not train_tar.is_file():
        raise DatasetNotFoundError(
            f"ImageNet training archive not found: {train_tar}. Download ILSVRC2012_img_train.tar "
            "(Training images, Task 1 & 2) from https://image-net.org/ and pass its path."
        )
    images: list[TrainImage] = []
    wnids: list[str] = []
    with tarfile.open(train_tar, "r:") as outer:
        members = [m for m in outer.getmembers() if m.isfile()]
        for member in tqdm(members, desc="indexing classes", unit="class", disable=not progress):
            wnid = PurePosixPath(member.name).name.removesuffix(".tar")
            if not member.name.endswith(".tar") or not is_wnid(wnid):
                raise BALFError(f"{train_tar}: member {member.name!r} is not a <wnid>.tar file")
            wnids.append(wnid)
            with tarfile.open(fileobj=outer.extractfile(member), mode="r:") as inner:
                for image in inner:
                    if image.isfile():
                        offset = member.offset_data + image.offset_data
                        name = PurePosixPath(image.name).name
                        images.append(TrainImage(wnid, name, offset, image.size))
    images.sort(key=lambda image: (image.wnid, image.name))
    return sorted(wnids), images


def sample_train_images(images: list[TrainImage], size: int, seed: int) -> list[TrainImage]:
    """Draw ``size`` images uniformly at random without replacement (seeded, reproducible).

    Args:
        images: all training images, in a fixed order (as returned by :func:`index_train_archive`).
        size: number of images to draw.
        seed: seed of the draw (see :func:`balf_paper.data.common.random_indices`).

    Returns:
        The drawn images, ordered by their offset in the archive (sequential reads).
    """
    chosen = [images[i] for i in random_indices(len(images), size, seed)]
    return sorted(chosen, key=lambda image: image.offset)
