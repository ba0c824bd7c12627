"""Build ``imagenet-calib/<wnid>/<file>.JPEG``: a seeded uniform sample of the training set.

Input: ``ILSVRC2012_img_train.tar``, a tar of 1000 per-class ``<wnid>.tar`` files (140 GB). The
archive is never unpacked: a first pass reads only the tar headers (seeking over image data) to
list all 1.28M images with their byte offsets; ``--size`` of them (default 8192) are drawn
uniformly at random without replacement with ``--seed`` over the list sorted by
``(wnid, file name)``, so the sample depends only on the archive's content and the seed; a second
pass copies just those images out. A folder is created for every class, also for classes the
sample misses, so class indices always match ``imagenet-val/``. Output is written into
``<output>.partial/`` and renamed when complete; a rerun with the same settings does nothing.

Defaults come from the ``extract_calib`` section of ``configs/imagenet_data.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from balf.errors import BALFError, DatasetNotFoundError
from balf_paper.data.extraction import (
    check_existing_output,
    parse_section_args,
    staged_directory,
    write_manifest,
)
from balf_paper.data.imagenet_archives import index_train_archive, sample_train_images

logger = logging.getLogger("extract_calib")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "imagenet_data.yaml"
SECTION = "extract_calib"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line, with defaults from the config file's ``extract_calib`` section."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--train-tar", type=Path, help="ILSVRC2012_img_train.tar")
        parser.add_argument("--output", type=Path, help="folder to create (imagenet-calib)")
        parser.add_argument("--size", type=int, default=8192, help="number of images to sample")
        parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
        parser.add_argument("--overwrite", action="store_true", help="rebuild an existing output")
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    return parse_section_args(
        argv, __doc__, SECTION, DEFAULT_CONFIG, add_arguments, ("train_tar", "output")
    )


def extract_calib(
    train_tar: Path,
    output: Path,
    size: int,
    seed: int,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Copy a seeded uniform random sample of training images into one folder per class.

    Args:
        train_tar: the training archive (tar of ``<wnid>.tar`` files).
        output: folder to create; ``output/<wnid>/<file>.JPEG``.
        size: number of images to draw (without replacement).
        seed: seed of the draw.
        overwrite: rebuild ``output`` even if a complete one with the same settings exists.
        progress: show tqdm bars.

    Returns:
        ``output``.

    Raises:
        DatasetNotFoundError: if the archive is missing.
        BALFError: for a size larger than the training set, a malformed archive, or an ``output``
            made with other settings when ``overwrite`` is False.
    """
    if not train_tar.is_file():
        raise DatasetNotFoundError(
            f"ImageNet training archive not found: {train_tar}. Download "
            "ILSVRC2012_img_train.tar (Training images, Task 1 & 2) from https://image-net.org/ "
            "and pass its path."
        )
    settings = {
        "kind": "imagenet-calib",
        "size": size,
        "seed": seed,
        "train_tar_bytes": train_tar.stat().st_size,
    }
    if check_existing_output(output, settings, overwrite):
        logger.info("%s is complete (%d images, seed %d); nothing to do", output, size, seed)
        return output
    wnids, images = index_train_archive(train_tar, progress=progress)
    logger.info("%s: %d images in %d classes", train_tar, len(images), len(wnids))
    chosen = sample_train_images(images, size, seed)
    with staged_directory(output) as staging:
        for wnid in wnids:
            (staging / wnid).mkdir()
        with train_tar.open("rb") as archive:
            for image in tqdm(chosen, desc="calib images", unit="img", disable=not progress):
                archive.seek(image.offset)
                data = archive.read(image.size)
                if len(data) != image.size:
                    raise BALFError(f"{train_tar} is truncated: cannot read {image.name}")
                (staging / image.wnid / image.name).write_bytes(data)
        write_manifest(
            staging, {**settings, "train_tar": str(train_tar), "train_images": len(images)}
        )
    logger.info("wrote %d images (seed %d) to %s", size, seed, output)
    return output


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 on success, 1 on a data error)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        extract_calib(
            args.train_tar, args.output, args.size, args.seed, args.overwrite, not args.no_progress
        )
    except (BALFError, DatasetNotFoundError) as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
