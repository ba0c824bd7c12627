"""Models and data of an experiment, by dataset name: one code path for every dataset.

- ``cifar10``: seeded subset of the train split / test split; weights
  ``results/cifar10/checkpoints/<model>/model.pt``.
- ``cifar10-jpeg``: CIFAR-10 as republished in JPEG form (image folders ``train/``, ``test/``);
  weights ``results/cifar10-jpeg/checkpoints/<model>/model.pt``. Labelled "CIFAR-10 (JPEG release)".
- ``fashion-mnist``: likewise, ``results/fashion-mnist/checkpoints/<model>/model.pt``.
- third-party option-A CIFAR-10 ResNets (``resnet20a`` ... ``resnet56a``) on either CIFAR-10:
  the public checkpoint file from ``--checkpoint`` or :data:`THIRD_PARTY_DIR`.
- ``imagenet``: ``<root>/imagenet-calib`` / ``<root>/imagenet-val``; public weights.

Calibration images always use the evaluation preprocessing (no augmentation).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data import (
    CIFAR10_CLASSES,
    CIFAR10_JPEG_SOURCE,
    CIFAR10C,
    ImageFolderTensors,
    calibration_subset,
    cifar10,
    cifar10_transform,
    evaluation_subset,
    imagenet_folder,
)
from ..errors import BALFError, DatasetNotFoundError, WeightsNotFoundError
from ..models import (
    THIRD_PARTY_CHECKPOINTS,
    create_model,
    eval_transform,
    load_checkpoint,
    load_third_party_checkpoint,
    normalisation_of,
)
from .labels import DATASET_LABELS, dataset_label

__all__ = [
    "DATASETS",
    "DATASET_LABELS",
    "THIRD_PARTY_DIR",
    "benchmark_model",
    "ExperimentData",
    "corrupted_evaluation",
    "dataset_label",
    "default_checkpoint",
    "experiment_data",
    "experiment_model",
    "require_checkpoint",
    "train_command",
]

DATASETS = ("cifar10", "cifar10-jpeg", "fashion-mnist", "imagenet")
_SMALL = {"cifar10": (3, 10), "cifar10-jpeg": (3, 10), "fashion-mnist": (1, 10)}

#: Where the third-party option-A checkpoints are looked up when no --checkpoint is given (on
#: the project's machines; elsewhere download them, see balf.models.load_third_party_checkpoint).
THIRD_PARTY_DIR = Path("../shared/models/cifar10-resnets-akamaster")
THIRD_PARTY_SOURCE = (
    "The files resnet20-12fca82f.th ... resnet56-4bfd9763.th are published in the GitHub "
    "repository akamaster/pytorch_resnet_cifar10 (folder pretrained_models/); pass the file with "
    "--checkpoint PATH."
)


@dataclass
class ExperimentData:
    """Calibration and evaluation sets of an experiment, and the calibration data's identity."""

    calibration: Dataset
    evaluation: Dataset
    data_tag: str


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise BALFError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")


def default_checkpoint(dataset: str, model_name: str, results_root: str | Path = "results") -> Path:
    """Where the repository's pretraining script writes a small-dataset model (or, for a
    third-party option-A model, where its public checkpoint is looked up)."""
    if model_name in THIRD_PARTY_CHECKPOINTS:
        return THIRD_PARTY_DIR / THIRD_PARTY_CHECKPOINTS[model_name][1]
    return Path(results_root) / dataset / "checkpoints" / model_name / "model.pt"


def train_command(dataset: str, model_name: str, out_dir: str | Path) -> str:
    """The command that trains a small-dataset model (one wording for every message)."""
    return (
        f"python scripts/cifar10/pretrain_resnet.py --dataset {dataset} --arch {model_name} "
        f"--out-dir {out_dir}"
    )


def require_checkpoint(dataset: str, model_name: str, checkpoint: str | Path | None) -> Path:
    """The weights file of a small-dataset model; raises when it is not on disk.

    Raises:
        WeightsNotFoundError: the file is missing; the message gives the command that makes it.
    """
    path = Path(checkpoint) if checkpoint else default_checkpoint(dataset, model_name)
    if model_name in THIRD_PARTY_CHECKPOINTS and not path.is_file():
        raise WeightsNotFoundError(
            f"third-party CIFAR-10 checkpoint not found: {path}. {THIRD_PARTY_SOURCE}"
        )
    if not path.is_file():
        raise WeightsNotFoundError(
            f"no trained {model_name} for {dataset} at {path}. Train one with "
            f"`{train_command(dataset, model_name, path.parent)}`, or pass --checkpoint PATH."
        )
    return path


def experiment_model(
    dataset: str,
    model_name: str,
    checkpoint: str | Path | None = None,
    pretrained: bool = True,
    seed: int = 0,
) -> tuple[nn.Module, str]:
    """The trained model of an experiment, in eval mode on the CPU, and its weights' identity.

    Args:
        dataset: one of :data:`DATASETS`.
        model_name: ``resnet20``/``resnet56`` for the small datasets, a registry name for ImageNet.
        checkpoint: weights file for the small datasets (default: :func:`default_checkpoint`).
        pretrained: ``False`` gives random weights drawn from ``seed`` (fixtures, benchmarks):
            the same in every run, so resumed sweeps never mix two models.

    Raises:
        WeightsNotFoundError: the checkpoint is missing (small datasets) or the public weights
            cannot be fetched (ImageNet).

    Returns:
        ``(model, weights)`` where ``weights`` names the weights: ``"random-seed<k>"``,
        ``"pretrained"`` (public ImageNet weights) or ``"<checkpoint path>@<sha256 prefix>"``.
    """
    _check_dataset(dataset)
    if not pretrained:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return _build_model(dataset, model_name, None), f"random-seed{seed}"
    if dataset == "imagenet":
        return create_model(model_name, pretrained=True).eval(), "pretrained"
    path = require_checkpoint(dataset, model_name, checkpoint)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return _build_model(dataset, model_name, path), f"{path}@{digest}"


def benchmark_model(name: str, synthetic: bool, image_size: int = 224) -> nn.Module:
    """An ImageNet registry model for the benchmarks, in eval mode on the CPU.

    Args:
        name: a registry name, or ``timm:<arch>`` for any timm architecture (random weights
            only, e.g. ``timm:vit_tiny_patch16_224`` for quick checks).
        synthetic: random weights (timm models built for ``image_size`` inputs) instead of the
            pretrained ones.
    """
    import timm

    from ..models import IMAGENET_MODELS, disable_fused_attention

    entry = IMAGENET_MODELS.get(name)
    arch = name.removeprefix("timm:") if name.startswith("timm:") else None
    if entry is not None and entry.library == "timm" and synthetic:
        arch = entry.arch
    if arch is not None:
        if not synthetic:
            raise BALFError(f"{name}: timm architectures by name need --synthetic")
        model = timm.create_model(arch, pretrained=False, img_size=image_size)
        disable_fused_attention(model)
        return model.eval()
    if entry is None:
        raise BALFError(f"unknown model {name!r}; choose from {list(IMAGENET_MODELS)}")
    if synthetic:
        return create_model(name, pretrained=False).eval()
    return experiment_model("imagenet", name)[0]


def _build_model(dataset: str, model_name: str, checkpoint: Path | None) -> nn.Module:
    if dataset == "imagenet":
        return create_model(model_name, pretrained=False).eval()
    in_channels, num_classes = _SMALL[dataset]
    model = create_model(
        model_name, pretrained=False, in_channels=in_channels, num_classes=num_classes
    )
    if checkpoint is not None and model_name in THIRD_PARTY_CHECKPOINTS:
        load_third_party_checkpoint(model, checkpoint)
    elif checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()


def _small_transform(dataset: str, model_name: str):
    return eval_transform(model_name, dataset=dataset)


def _cifar10_transform(model_name: str):
    """PIL -> normalised tensor for CIFAR-10 images, with the model's normalisation."""
    if model_name in THIRD_PARTY_CHECKPOINTS:
        return eval_transform(model_name, dataset="cifar10")
    return cifar10_transform(train=False)


def _splits(dataset: str, root: str | Path, model_name: str) -> tuple[Dataset, Dataset]:
    if dataset == "cifar10":
        tf = _cifar10_transform(model_name)
        return cifar10(root, train=True, transform=tf), cifar10(root, train=False, transform=tf)
    if dataset == "cifar10-jpeg":
        mean, std = normalisation_of(model_name, dataset)
        return tuple(
            ImageFolderTensors(
                root,
                split,
                CIFAR10_CLASSES,
                mean,
                std,
                source_hint=CIFAR10_JPEG_SOURCE,
                preload=split == "test",  # calibration reads a small subset of train
            )
            for split in ("train", "test")
        )
    if dataset == "fashion-mnist":
        from ..data.fashion_mnist import FASHION_MNIST_FILES, FashionMNIST

        fm_root = Path(root) if root and Path(root).is_dir() else None
        if fm_root is not None:  # an existing folder given explicitly must hold the files
            missing = [
                f
                for pair in FASHION_MNIST_FILES.values()
                for f in pair
                if not (fm_root / f).is_file()
            ]
            if missing:
                raise DatasetNotFoundError(
                    f"Fashion-MNIST: {fm_root} lacks {', '.join(missing)}. Put the four IDX .gz "
                    "files there, or pass a --data-root that does not exist to use the standard "
                    "search path (/usr/share/datasets/fashion-mnist from `apt-get install "
                    "dataset-fashion-mnist`, or torchvision's download)."
                )
        return FashionMNIST("train", fm_root), FashionMNIST("test", fm_root)
    tf = eval_transform(model_name)
    root = Path(root)
    return imagenet_folder(root / "imagenet-calib", tf), imagenet_folder(root / "imagenet-val", tf)


def experiment_data(
    dataset: str,
    root: str | Path,
    model_name: str,
    calib_size: int,
    seed: int = 0,
    eval_size: int | None = None,
) -> ExperimentData:
    """Calibration subset (seeded) and evaluation set (whole, or a seeded subset).

    Args:
        root: data folder (``cifar-10-batches-py/`` inside for CIFAR-10; the IDX files for
            Fashion-MNIST, else the standard search path; ``imagenet-calib/`` and
            ``imagenet-val/`` inside for ImageNet).
        calib_size: calibration images drawn uniformly at random from the training images.
        eval_size: evaluate on a seeded subset of this size (``None``: the full set).
    """
    _check_dataset(dataset)
    train, test = _splits(dataset, root, model_name)
    calibration = calibration_subset(train, calib_size, seed)
    evaluation = evaluation_subset(test, eval_size, seed)
    tag = f"{dataset}-{model_name}-calib{calib_size}-seed{seed}"
    return ExperimentData(calibration, evaluation, tag)


def corrupted_evaluation(
    dataset: str,
    root: str | Path,
    corruption: str,
    severity: int,
    eval_size: int | None = None,
    seed: int = 0,
    model_name: str = "resnet20",
) -> Dataset:
    """One (corruption, severity) test set in the CIFAR-10-C layout (CIFAR-10-C or Fashion-MNIST-C).

    A fixed seeded subset of ``eval_size`` positions is used for every corruption and severity.
    ``model_name`` selects the input normalisation (third-party models use their own).
    """
    if dataset in ("cifar10", "cifar10-jpeg"):
        tf = _cifar10_transform(model_name)
    elif dataset == "fashion-mnist":
        tf = _small_transform(dataset, "resnet20")
    else:
        raise BALFError(f"no corrupted test sets for dataset {dataset!r}")
    try:
        full = CIFAR10C(root, corruption, severity, transform=tf)
    except DatasetNotFoundError as exc:
        if dataset != "fashion-mnist":
            raise
        missing = [
            p
            for p in (Path(root) / f"{corruption}.npy", Path(root) / "labels.npy")
            if not p.is_file()
        ]
        raise DatasetNotFoundError(
            f"Fashion-MNIST-C file not found: {missing[0] if missing else root}. Generate it "
            "with `bash scripts/fashion_mnist/make_corrupted.sh` (CIFAR-10-C layout: labels.npy "
            "and <corruption>.npy of shape (5·N, 28, 28) uint8)."
        ) from exc
    if eval_size is None or eval_size >= len(full):
        return full
    indices = evaluation_subset(full, eval_size, seed).indices
    return CIFAR10C(root, corruption, severity, transform=tf, indices=indices)
