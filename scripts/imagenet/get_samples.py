"""Lay the ImageNet samples out as ImageNet folders (``imagenet-val/``, ``imagenet-calib/``).

Source (``SHARED_DIR``, default ``../shared/data/imagenet-samples``): ``val1300/`` (1,300
ILSVRC2012 validation images) with ``val1300_labels.txt``, ``train1000/`` (1,000 training images,
one per class, WordNet id first in each name) and ``synset_words.txt``. Destination (``DEST``,
default ``datasets/imagenet-samples``): the layouts the ImageNet scripts read, with all 1,000
class folders. Then ``--dataset imagenet-samples`` (results labelled "ImageNet samples (1,300 val /
1,000 train images)") finds it with the default ``--data-root datasets``. A rerun with the same
source does nothing; ``--overwrite`` rebuilds.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from balf_paper.data.imagenet_samples import SAMPLES_DEFAULT_DEST, layout_imagenet_samples
from balf.errors import BALFError, DatasetNotFoundError

DEFAULT_SHARED = Path("../shared/data/imagenet-samples")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line: ``[SHARED_DIR] [DEST] [--overwrite]``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "shared_dir",
        nargs="?",
        type=Path,
        default=DEFAULT_SHARED,
        help=f"folder of the samples (default: {DEFAULT_SHARED})",
    )
    parser.add_argument(
        "dest",
        nargs="?",
        type=Path,
        default=SAMPLES_DEFAULT_DEST,
        help=f"folder to create (default: {SAMPLES_DEFAULT_DEST})",
    )
    parser.add_argument("--overwrite", action="store_true", help="rebuild existing outputs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 on success, 2 with the message alone on a data error."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        val, calib = layout_imagenet_samples(args.shared_dir, args.dest, args.overwrite)
    except (BALFError, DatasetNotFoundError) as exc:
        print(f"get_samples.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"{val}\n{calib}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
