"""Calibration under distribution shift: calibrate on corrupted images, evaluate on clean ones.

``python -m balf_paper.experiments calib-shift --dataset NAME`` (the paper's current robustness
study; the older ``corrupted`` experiment evaluates compressed models *on* corrupted test sets,
this one *calibrates* on corrupted images). For every calibration set, each mode (default
``flops_auto`` and ``params_auto``) is swept over the keep-ratios (default 0.3 … 0.9) and
evaluated on the **clean** test set:

- ``clean``: the ordinary calibration subset (``--calib-size`` images drawn with the seed);
- ``<corruption>-s<severity>``: the same subset corrupted by
  :mod:`balf_paper.data.shifted_calibration` (ImageNet-C severity constants), cached under
  ``--shift-root`` with a manifest; or, with ``--imagenet-c-root``, a subset of the published
  ImageNet-C set;
- ``imagenet-v2-<variant>`` with ``--imagenet-v2-root``: a subset of ImageNet-V2.

Results: ``<out-root>/<dataset>/<model>/calib-shift/<set>/<mode>/results.json`` (seed ``k > 0``
in ``.../seed<k>/``), each config recording the set in ``calibration_shift``. Rendered by
:mod:`balf_paper.experiments.render.calib_shift`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset, Subset

from balf.ranks.modes import registered_modes
from balf_paper.data import CORRUPTIONS, SEVERITIES, calibration_subset
from balf_paper.data.imagenet_shift import (
    IMAGENET_V2_VARIANTS,
    imagenet_c,
    imagenet_c_group,
    imagenet_v2,
)
from balf_paper.data.shifted_calibration import (
    NormalisedImages,
    raw_images,
    shifted_images,
    tensor_steps,
)
from balf_paper.experiments.cli.image import model_dir, run_name
from balf_paper.experiments.cli.options import (
    add_common_arguments,
    configure_process,
    parse_with_yaml,
)
from balf_paper.experiments.cli.setting import Calibration, ImageSetting
from balf_paper.experiments.layout import CALIB_SHIFT_DIR
from balf_paper.experiments.sweep.seeds import run_dir_of, seeds_of

__all__ = ["DEFAULT_RATIOS", "calib_shift_main", "set_name"]

DEFAULT_RATIOS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def set_name(corruption: str, severity: int) -> str:
    """Folder name of one corrupted calibration set, e.g. ``fog-s3``."""
    return f"{corruption}-s{severity}"


def _parser(dataset: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=f"Calibration under shift on {dataset}: compress with calibration images "
        "from each corrupted set (corruption x severity), evaluate on the clean test set."
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["flops_auto", "params_auto"],
        choices=list(registered_modes()),
        metavar="MODE",
    )
    parser.add_argument("--ratios", nargs="+", type=float, default=list(DEFAULT_RATIOS))
    parser.add_argument(
        "--corruptions", nargs="+", default=list(CORRUPTIONS), help="corruptions to calibrate on"
    )
    parser.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES))
    parser.add_argument(
        "--shift-root",
        default="datasets/calib-shift",
        help="cache of the corrupted calibration images (one folder per clean subset, with a "
        "manifest)",
    )
    parser.add_argument(
        "--imagenet-c-root",
        default=None,
        help="calibrate on the published ImageNet-C (<root>/<corruption>/<severity>/<wnid>/) "
        "instead of corrupting the calibration subset here",
    )
    parser.add_argument(
        "--imagenet-v2-root",
        default=None,
        help="also calibrate on ImageNet-V2 (imagenetv2-<variant>-format-val/ or its parent)",
    )
    parser.add_argument(
        "--imagenet-v2-variants",
        nargs="+",
        default=[IMAGENET_V2_VARIANTS[0]],
        choices=list(IMAGENET_V2_VARIANTS),
    )
    parser.add_argument("--no-clean", action="store_true", help="skip the clean calibration set")
    return parser


def _base_transform(dataset: Dataset) -> Any:
    """The preprocessing of the dataset under a chain of ``Subset``s."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return getattr(dataset, "transform", None)


def _sweep_set(
    setting: ImageSetting, clean: Calibration, name: str, data: Dataset, shift: dict[str, Any]
) -> None:
    """Every mode of ``--modes`` calibrated on ``data`` (calibration set ``name``)."""
    args = setting.args
    tag = clean.tag if name == "clean" else f"{clean.tag}-{name}"
    calibration = Calibration(data, tag, clean.size, clean.seed, {"set": name, **shift})
    runner = setting.runner(calibration)
    for mode in args.modes:
        config = setting.config(calibration, mode, args.ratios)
        run_dir = model_dir(args, setting.dataset, CALIB_SHIFT_DIR, name, run_name(args, mode))
        setting.sweep(runner, config, run_dir_of(args, run_dir, clean.seed))


def calib_shift_main(argv: Sequence[str] | None, dataset: str) -> None:
    """Calibration under shift (see the module docstring)."""
    args = parse_with_yaml(_parser(dataset), argv, f"{dataset}_calib_shift_sweep.yaml")
    configure_process(args)
    setting = ImageSetting(args, dataset)
    for seed in seeds_of(args):
        clean = setting.clean(seed=seed)
        if not args.no_clean:
            _sweep_set(setting, clean, "clean", clean.data, {"source": "clean"})
        raw = None
        for corruption in args.corruptions:
            for severity in args.severities:
                shift = {"corruption": corruption, "severity": severity,
                         "group": imagenet_c_group(corruption)}  # fmt: skip
                if args.imagenet_c_root:
                    _, normalise = tensor_steps(_base_transform(clean.data))
                    from torchvision import transforms as T  # on use: --help stays fast

                    tensor_only = T.Compose([T.ToTensor(), normalise])  # ImageNet-C: 224 crops
                    full = imagenet_c(args.imagenet_c_root, corruption, severity, tensor_only)
                    data = calibration_subset(full, min(clean.size, len(full)), seed)
                    shift |= {"source": "imagenet-c", "root": str(args.imagenet_c_root)}
                else:
                    raw = raw if raw is not None else raw_images(clean.data)
                    images, entry = shifted_images(
                        args.shift_root, clean.tag, raw, corruption, severity, seed
                    )
                    data = NormalisedImages(images, raw.labels, raw.mean, raw.std)
                    shift |= {"source": "corrupted here", "sha256": entry["sha256"]}
                _sweep_set(setting, clean, set_name(corruption, severity), data, shift)
        for variant in args.imagenet_v2_variants if args.imagenet_v2_root else []:
            full = imagenet_v2(args.imagenet_v2_root, variant, _base_transform(clean.data))
            data = calibration_subset(full, min(clean.size, len(full)), seed)
            shift = {"source": "imagenet-v2", "variant": variant, "group": "imagenet-v2",
                     "root": str(args.imagenet_v2_root)}  # fmt: skip
            _sweep_set(setting, clean, f"imagenet-v2-{variant}", data, shift)
