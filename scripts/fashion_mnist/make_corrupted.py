"""Fashion-MNIST-C: the 15 CIFAR-10-C corruptions at 5 severities on the Fashion-MNIST test set.

Output, in the CIFAR-10-C layout read by ``balf_paper.data.CIFAR10C``:

    <out>/labels.npy          (5·N,) int64: the N test labels, repeated for severities 1..5
    <out>/<corruption>.npy    (5·N, 28, 28) uint8: the N images at severity 1, then 2, ... 5
    <out>/manifest.json       the settings, and every corruption completed (seconds, sha256)

Corruptions come from ``imagecorruptions-imaug`` (import name ``imagecorruptions``), the maintained
fork of ``imagecorruptions`` (Michaelis et al.), which packages Hendrycks & Dietterich's reference
code: ``corrupt(image, corruption_name=..., severity=...)``. Its severity constants are those of
ImageNet-C, written for any image size; CIFAR-10-C was made with a separate, milder set of
constants, so a severity here is harsher than the same severity of CIFAR-10-C.

Grayscale 28×28 images: the package needs at least 32×32 pixels, so every image is padded by 2
pixels on each side by reflection (no resampling: the clean pixels stay exact and the corruptions
act at the native pixel scale; reflection keeps the border statistics that blurs, contrast and
glass blur see), stacked into three identical RGB channels, corrupted, cropped back to the centre
28×28, and channel 0 is kept. Most corruptions leave the three channels identical; the noise
corruptions draw independent noise per channel and frost overlays a coloured photo: channel 0
keeps the per-pixel noise distribution of the package's severity constants (the channel mean
would divide the noise standard deviation by √3).

Reproducible: ``np.random`` (which the package draws from) is seeded per (corruption, severity)
from ``(--seed, corruption index, severity)``; glass blur and impulse noise take an explicit
per-image seed drawn from the same seed sequence. ``--subset N`` corrupts a fixed seeded subset of
N test images (``balf_paper.data.random_indices``, sorted); the default is the full test set.

Timing, measured on 2 CPU cores shared with a training job (one process, niced): one
(corruption, severity) on the 10000 test images takes 0.7 s (pixelate) to 77 s (frost, which
reads and resizes its frost photo for every image); all 75 took 16.5 minutes (frost 5.9 min,
zoom blur 2.4 min, shot noise 1.6 min, defocus blur 1.5 min, the others under 1.1 min each).
That is well under half an hour, so the default is the full test set (``subset: null`` in
``configs/fashion-mnist_make_corrupted.yaml``); the output is 562 MB.

Atomic and resumable: each ``.npy`` is written to a temporary file and renamed; the manifest is
updated after each corruption, and a rerun skips the corruptions the manifest lists with the same
settings. A folder made with other settings is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

from balf_paper.data.corruptions import PAD, corrupt_images, make_corrupted
from balf_paper.data.fashion_mnist import find_fashion_mnist, load_fashion_mnist
from balf_paper.experiments.cli.options import (
    add_corruption_arguments,
    corrupt_with_arguments,
    parse_with_yaml,
    run_script,
)

__all__ = ["corrupt_images", "main", "make_corrupted"]

logger = logging.getLogger("make_corrupted")

FORMAT = "balf-fashion-mnist-c-v1"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Defaults come from configs/fashion-mnist_make_corrupted.yaml.",
    )
    parser.add_argument(
        "--data-root",
        default=None,
        help="folder with the Fashion-MNIST IDX .gz files (default: the standard search order)",
    )
    add_corruption_arguments(parser, out="datasets/fashion-mnist-c")
    return parse_with_yaml(parser, argv, "fashion-mnist_make_corrupted.yaml")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    source = find_fashion_mnist(args.data_root)
    images, labels = (t.numpy() for t in load_fashion_mnist("test", source))
    settings = {
        "format": FORMAT,
        "source": "fashion-mnist test",
        "padding": f"reflect {PAD}px to 32x32, crop back",
        "channel": "0 of the corrupted RGB image",
    }
    return corrupt_with_arguments(args, images, labels, settings)


if __name__ == "__main__":
    run_script(main)
