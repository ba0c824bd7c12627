"""CIFAR-10-C of the JPEG release: the 15 corruptions at 5 severities on its test split.

Same code as Fashion-MNIST-C (:mod:`balf_paper.data.corruptions`, ``imagecorruptions-imaug``):
each RGB
32×32 test image is corrupted as it is (no padding is needed at 32×32), reproducibly seeded per
(corruption, severity). Written in the CIFAR-10-C layout (``labels.npy`` and one
``<corruption>.npy`` of shape ``(5·N, 32, 32, 3)`` uint8 per corruption, plus ``manifest.json``),
read by ``balf_paper.data.CIFAR10C``. The package's severity constants are ImageNet-C's, harsher at
32×32 than those of the published CIFAR-10-C; results on this set are labelled
"CIFAR-10-C (JPEG release, made here)" and are not comparable with published CIFAR-10-C numbers.

Users with the original CIFAR-10 download the published CIFAR-10-C instead
(https://zenodo.org/record/2535967); ``--dataset cifar10`` builds one from the original test
pickles the same way, for comparison.

Resumable and atomic (see :func:`balf_paper.data.corruptions.make_corrupted`). Defaults come from
``configs/cifar10-jpeg_make_corrupted.yaml``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np

from balf.errors import BALFError
from balf_paper.data import CIFAR10_CLASSES, CIFAR10_JPEG_SOURCE, cifar10
from balf_paper.data.image_folder import load_image_folder
from balf_paper.experiments.cli.options import (
    add_corruption_arguments,
    corrupt_with_arguments,
    parse_with_yaml,
    run_script,
)

FORMATS = {"cifar10-jpeg": "balf-cifar10-jpeg-c-v1", "cifar10": "balf-cifar10-c-v1"}


def load_test_images(dataset: str, root: str) -> tuple[np.ndarray, np.ndarray]:
    """The test split as uint8 ``(N, 32, 32, 3)`` images and int64 ``(N,)`` labels."""
    if dataset == "cifar10-jpeg":
        images, labels = load_image_folder(
            root, "test", CIFAR10_CLASSES, source_hint=CIFAR10_JPEG_SOURCE
        )
        return images.permute(0, 2, 3, 1).contiguous().numpy(), labels.numpy()
    if dataset == "cifar10":
        test = cifar10(root, train=False, transform=lambda image: image)
        return np.asarray(test.data), np.asarray(test.targets, dtype=np.int64)
    raise BALFError(f"unknown dataset {dataset!r}; choose one of {sorted(FORMATS)}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Defaults come from configs/cifar10-jpeg_make_corrupted.yaml.",
    )
    parser.add_argument("--dataset", choices=sorted(FORMATS), default="cifar10-jpeg")
    parser.add_argument("--data-root", default="datasets/cifar10-jpeg", help="dataset folder")
    add_corruption_arguments(parser, out="datasets/cifar10-jpeg-c")
    return parse_with_yaml(parser, argv, "cifar10-jpeg_make_corrupted.yaml")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    images, labels = load_test_images(args.dataset, args.data_root)
    settings = {
        "format": FORMATS[args.dataset],
        "source": f"{args.dataset} test",
        "padding": "none (32x32 RGB)",
    }
    return corrupt_with_arguments(args, images, labels, settings)


if __name__ == "__main__":
    run_script(main)
