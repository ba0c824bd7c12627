"""Build ``imagenet-val/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG`` from the official archives.

Inputs: ``ILSVRC2012_img_val.tar`` (50000 JPEGs in one flat tar) and the devkit
``ILSVRC2012_devkit_t12.tar.gz``, whose ``data/ILSVRC2012_validation_ground_truth.txt`` gives the
1-based ILSVRC id of each image in order and whose ``data/meta.mat`` maps ILSVRC ids to WordNet
ids (read without SciPy). The validation tar is streamed once; images are written into
``<output>.partial/`` which is renamed to ``<output>`` when every image is in place. A rerun
whose output is already complete does nothing; ``--overwrite`` rebuilds it.

Defaults come from the ``extract_val`` section of ``configs/imagenet_data.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tarfile
from pathlib import Path

from tqdm import tqdm

from balf.errors import BALFError, DatasetNotFoundError
from balf_paper.data.extraction import (
    check_existing_output,
    parse_section_args,
    staged_directory,
    write_manifest,
)
from balf_paper.data.imagenet_archives import read_devkit, val_image_number

logger = logging.getLogger("extract_val")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "imagenet_data.yaml"
SECTION = "extract_val"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line, with defaults from the config file's ``extract_val`` section."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--val-tar", type=Path, help="ILSVRC2012_img_val.tar")
        parser.add_argument("--devkit", type=Path, help="ILSVRC2012_devkit_t12.tar.gz")
        parser.add_argument("--output", type=Path, help="folder to create (imagenet-val)")
        parser.add_argument("--overwrite", action="store_true", help="rebuild an existing output")
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    return parse_section_args(
        argv, __doc__, SECTION, DEFAULT_CONFIG, add_arguments, ("val_tar", "devkit", "output")
    )


def extract_val(
    val_tar: Path, devkit: Path, output: Path, overwrite: bool = False, progress: bool = True
) -> Path:
    """Sort the validation images into one folder per WordNet id.

    Args:
        val_tar: the validation archive (``ILSVRC2012_val_XXXXXXXX.JPEG`` members).
        devkit: the devkit archive.
        output: folder to create; ``output/<wnid>/<file>.JPEG``.
        overwrite: rebuild ``output`` even if a complete one exists.
        progress: show a tqdm bar.

    Returns:
        ``output``.

    Raises:
        DatasetNotFoundError: if an archive is missing.
        BALFError: if the archive does not hold exactly the images the ground truth lists, or
            ``output`` exists from other settings and ``overwrite`` is False.
    """
    wnids = read_devkit(devkit)
    settings = {"kind": "imagenet-val", "images": len(wnids), "classes": len(set(wnids))}
    if check_existing_output(output, settings, overwrite):
        logger.info("%s is complete (%d images); nothing to do", output, len(wnids))
        return output
    if not val_tar.is_file():
        raise DatasetNotFoundError(
            f"ImageNet validation archive not found: {val_tar}. Download ILSVRC2012_img_val.tar "
            "(Validation images, all tasks) from https://image-net.org/ and pass its path."
        )
    with staged_directory(output) as staging:
        for wnid in set(wnids):
            (staging / wnid).mkdir()
        written: set[int] = set()
        with (
            tarfile.open(val_tar, "r|*") as tar,
            tqdm(total=len(wnids), desc="val images", unit="img", disable=not progress) as bar,
        ):
            for member in tar:
                number = val_image_number(member.name) if member.isfile() else None
                if number is None:
                    logger.debug("skipping %s", member.name)
                    continue
                if not 1 <= number <= len(wnids) or number in written:
                    raise BALFError(f"{val_tar}: unexpected or repeated member {member.name}")
                target = staging / wnids[number - 1] / Path(member.name).name
                with tar.extractfile(member) as source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
                written.add(number)
                bar.update()
        if len(written) != len(wnids):
            missing = sorted(set(range(1, len(wnids) + 1)) - written)
            raise BALFError(
                f"{val_tar} holds {len(written)} of the {len(wnids)} images the devkit lists "
                f"(first missing: ILSVRC2012_val_{missing[0]:08d}.JPEG)"
            )
        write_manifest(staging, {**settings, "val_tar": str(val_tar), "devkit": str(devkit)})
    logger.info("wrote %d images in %d classes to %s", len(wnids), len(set(wnids)), output)
    return output


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 on success, 1 on a data error)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        extract_val(args.val_tar, args.devkit, args.output, args.overwrite, not args.no_progress)
    except (BALFError, DatasetNotFoundError) as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
