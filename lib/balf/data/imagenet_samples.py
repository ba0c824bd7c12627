"""ImageNet samples: 1,300 real validation and 1,000 real training images laid out as ImageNet.

The source folder (on the project's machines ``../shared/data/imagenet-samples``) holds

- ``val1300/ILSVRC2012_val_XXXXXXXX.JPEG``: 1,300 ILSVRC2012 validation images (725 classes,
  prescaled to 227×227), labelled by ``val1300_labels.txt`` (``file, index`` per line, index
  0..999 in sorted-WordNet-id order);
- ``train1000/<wnid>_<name>.JPEG``: 1,000 ILSVRC2012 training images, one per class;
- ``synset_words.txt``: the 1,000 WordNet ids in index order (``n01440764 tench, ...``).

:func:`layout_imagenet_samples` copies them into ``<dest>/imagenet-val/<wnid>/`` and
``<dest>/imagenet-calib/<wnid>/``, the layouts :func:`balf_paper.data.imagenet.imagenet_folder` reads,
with a folder for every one of the 1,000 classes (empty ones included) so that class indices
match pretrained classifiers. So ``--dataset imagenet --data-root <dest>`` runs the ImageNet code
unchanged; the dataset ``imagenet-samples`` (registered here) is the same data under its own name,
so every result says "ImageNet samples (1,300 val / 1,000 train images)", never "ImageNet".
Each output folder is built under ``<name>.partial`` and renamed when complete; a rerun with the
same source does nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

from torch.utils.data import Dataset

from balf_paper.data.extraction import check_existing_output, staged_directory, write_manifest
from balf_paper.data.imagenet import IMAGENET_NUM_CLASSES, imagenet_folder, is_wnid
from balf.errors import BALFError, DatasetNotFoundError

__all__ = [
    "SAMPLES_DATASET",
    "SAMPLES_DEFAULT_DEST",
    "SAMPLES_LABEL",
    "SAMPLES_SOURCE",
    "layout_imagenet_samples",
    "read_synsets",
    "read_val_labels",
    "samples_root",
]

logger = logging.getLogger(__name__)

SAMPLES_DATASET = "imagenet-samples"
SAMPLES_LABEL = "ImageNet samples (1,300 val / 1,000 train images)"
#: ``get_samples.sh`` writes here by default (``--data-root datasets`` finds it).
SAMPLES_DEFAULT_DEST = Path("datasets") / SAMPLES_DATASET
SAMPLES_SOURCE = (
    "The samples are val1300/ (1,300 ILSVRC2012 validation images, public repository "
    "VeriSilicon/acuity-dataset, folder ILSVRC2012_VAL_SET/), val1300_labels.txt, train1000/ "
    "(1,000 training images, public repository EliSchwartz/imagenet-sample-images) and "
    "synset_words.txt; on the project's machines in ../shared/data/imagenet-samples. Lay them out "
    "with `bash scripts/imagenet/get_samples.sh SHARED_DIR DEST`."
)


def read_synsets(path: Path) -> list[str]:
    """WordNet ids of ``synset_words.txt`` in index order (1,000, sorted, as torchvision's).

    Raises:
        DatasetNotFoundError: the file is missing.
        BALFError: a line does not start with a WordNet id, or the ids are not the 1,000 sorted
            ones (class index = position in sorted order is what pretrained classifiers use).
    """
    if not path.is_file():
        raise DatasetNotFoundError(f"synset list not found: {path}. {SAMPLES_SOURCE}")
    wnids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    bad = [w for w in wnids if not is_wnid(w)]
    if bad:
        raise BALFError(f"{path}: lines must start with a WordNet id, got {bad[:3]}")
    if len(wnids) != IMAGENET_NUM_CLASSES or len(set(wnids)) != len(wnids):
        raise BALFError(
            f"{path} lists {len(wnids)} ids ({len(set(wnids))} distinct); ImageNet-1k has "
            f"{IMAGENET_NUM_CLASSES}"
        )
    if wnids != sorted(wnids):
        raise BALFError(f"{path}: the ids are not in sorted order, so indices would not match")
    return wnids


def read_val_labels(path: Path, num_classes: int = IMAGENET_NUM_CLASSES) -> list[tuple[str, int]]:
    """``(file name, class index)`` pairs of ``val1300_labels.txt`` (``file, index`` per line).

    Raises:
        DatasetNotFoundError: the file is missing.
        BALFError: a malformed line, an index outside ``[0, num_classes)``, a repeated file.
    """
    if not path.is_file():
        raise DatasetNotFoundError(f"validation labels not found: {path}. {SAMPLES_SOURCE}")
    pairs: list[tuple[str, int]] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        name, sep, index = line.partition(",")
        try:
            label = int(index)
        except ValueError:
            label = -1
        if not sep or not name.strip() or not 0 <= label < num_classes:
            raise BALFError(
                f"{path}:{number}: expected 'file, index' with index in [0, {num_classes}), "
                f"got {line!r}"
            )
        pairs.append((name.strip(), label))
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise BALFError(f"{path}: a file is listed twice")
    return pairs


def _copy_into(staging: Path, wnids: list[str], files: list[tuple[Path, str]]) -> None:
    for wnid in wnids:
        (staging / wnid).mkdir()
    for source, wnid in files:
        shutil.copyfile(source, staging / wnid / source.name)


def layout_imagenet_samples(
    shared_dir: str | os.PathLike, dest: str | os.PathLike, overwrite: bool = False
) -> tuple[Path, Path]:
    """Copy the samples into ``dest/imagenet-val/<wnid>/`` and ``dest/imagenet-calib/<wnid>/``.

    Args:
        shared_dir: the source folder (``val1300/``, ``val1300_labels.txt``, ``train1000/``,
            ``synset_words.txt``).
        dest: folder to hold ``imagenet-val/`` and ``imagenet-calib/`` (created).
        overwrite: rebuild outputs that exist.

    Returns:
        ``(val folder, calib folder)``; each has 1,000 class folders (val: 1,300 images in 725
        non-empty ones; calib: one image per class).

    Raises:
        DatasetNotFoundError: the source folder or one of its parts is missing.
        BALFError: a labels line names a missing image, a training file's name does not start
            with a listed WordNet id, or an output exists from other settings (and not
            ``overwrite``).
    """
    shared = Path(shared_dir)
    dest = Path(dest)
    if not shared.is_dir():
        raise DatasetNotFoundError(f"ImageNet samples folder not found: {shared}. {SAMPLES_SOURCE}")
    wnids = read_synsets(shared / "synset_words.txt")
    labels = read_val_labels(shared / "val1300_labels.txt", len(wnids))
    val_dir, train_dir = shared / "val1300", shared / "train1000"
    for folder in (val_dir, train_dir):
        if not folder.is_dir():
            raise DatasetNotFoundError(f"{folder} not found. {SAMPLES_SOURCE}")
    val_files = [(val_dir / name, wnids[label]) for name, label in labels]
    missing = [str(path) for path, _ in val_files if not path.is_file()]
    if missing:
        raise BALFError(f"{len(missing)} labelled validation images are missing: {missing[:3]}")
    known = set(wnids)
    train_files = []
    for path in sorted(train_dir.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        wnid = path.name.split("_", 1)[0]
        if wnid not in known:
            raise BALFError(
                f"{path}: a training image's name must start with its WordNet id "
                "(<wnid>_<name>.JPEG) listed in synset_words.txt"
            )
        train_files.append((path, wnid))
    if not train_files:
        raise DatasetNotFoundError(f"no images in {train_dir}. {SAMPLES_SOURCE}")
    outputs = []
    for kind, files in (("imagenet-val", val_files), ("imagenet-calib", train_files)):
        output = dest / kind
        settings = {
            "kind": f"{SAMPLES_DATASET}/{kind}",
            "images": len(files),
            "classes": len({wnid for _, wnid in files}),
        }
        if check_existing_output(output, settings, overwrite):
            logger.info("%s is complete (%d images); nothing to do", output, len(files))
        else:
            dest.mkdir(parents=True, exist_ok=True)
            with staged_directory(output) as staging:
                _copy_into(staging, wnids, files)
                write_manifest(staging, {**settings, "source": str(shared)})
            logger.info(
                "wrote %d images (%d classes) to %s", len(files), settings["classes"], output
            )
        outputs.append(output)
    return outputs[0], outputs[1]


def samples_root(root: str | os.PathLike | None) -> Path:
    """The folder holding ``imagenet-val/`` and ``imagenet-calib/``: ``<root>/imagenet-samples``
    when that exists (``--data-root datasets``), else ``root`` itself; ``None``: the default."""
    if root is None:
        return SAMPLES_DEFAULT_DEST
    nested = Path(root) / SAMPLES_DATASET
    return nested if nested.is_dir() else Path(root)


def _samples_splits(root, model_name: str) -> tuple[Dataset, Dataset]:
    """``(imagenet-calib, imagenet-val)`` with the model's own evaluation preprocessing."""
    from balf_paper.models import eval_transform as model_transform

    tf = model_transform(model_name)
    folder = samples_root(root)
    try:
        return imagenet_folder(folder / "imagenet-calib", tf), imagenet_folder(
            folder / "imagenet-val", tf
        )
    except DatasetNotFoundError as exc:
        raise DatasetNotFoundError(
            f"{exc} For the ImageNet samples run `bash scripts/imagenet/get_samples.sh "
            f"SHARED_DIR {SAMPLES_DEFAULT_DEST}` first."
        ) from exc


def _register() -> None:
    from balf_paper.data.registry import dataset_info, register_dataset

    register_dataset(
        dataclasses.replace(dataset_info("imagenet"), name=SAMPLES_DATASET, splits=_samples_splits)
    )


_register()
