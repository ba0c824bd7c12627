"""Models and data of an experiment, by dataset name: one code path for every dataset.

The datasets are those of :mod:`balf_paper.data.registry` (``cifar10``, ``cifar10-jpeg``,
``fashion-mnist``, ``imagenet``, and any registered later). Calibration images are a seeded subset
of the train split, evaluation uses the test split; both always use the evaluation preprocessing (no
augmentation). Small datasets' weights are ``results/<dataset>/checkpoints/<model>/model.pt``;
datasets with public weights (ImageNet) need no checkpoint. Results on ``cifar10-jpeg`` (CIFAR-10 as
republished in JPEG form) are labelled "CIFAR-10 (JPEG release)"
(:mod:`balf_paper.experiments.render.labels`). The third-party option-A CIFAR-10 ResNets
(``resnet20a`` ... ``resnet56a``) load their public checkpoint from ``--checkpoint`` or
:data:`THIRD_PARTY_DIR`, and see inputs with their own normalisation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from balf.errors import BALFError, WeightsNotFoundError
from balf_paper.data import calibration_subset, evaluation_subset
from balf_paper.data.registry import DatasetInfo, dataset_info, registered_datasets
from balf_paper.models import (
    THIRD_PARTY_CHECKPOINTS,
    create_model,
    model_entry,
    preprocessing_of,
)

__all__ = [
    "DATASETS",
    "THIRD_PARTY_DIR",
    "benchmark_model",
    "ExperimentData",
    "corrupted_evaluation",
    "default_checkpoint",
    "experiment_data",
    "experiment_model",
    "require_checkpoint",
    "train_command",
]

DATASETS = registered_datasets()
"""The built-in datasets' names (every registered one:
:func:`balf_paper.data.registered_datasets`)."""

#: Where the third-party option-A checkpoints are looked up when no --checkpoint is given (on
#: the project's machines; elsewhere download them, see
#: balf_paper.models.load_third_party_checkpoint).
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
        dataset: a registered dataset name.
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
    info = dataset_info(dataset)
    if not pretrained:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return _build_model(info, model_name, None), f"random-seed{seed}"
    if info.public_weights:
        return create_model(model_name, pretrained=True).eval(), "pretrained"
    path = require_checkpoint(dataset, model_name, checkpoint)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return _build_model(info, model_name, path), f"{path}@{digest}"


def benchmark_model(name: str, synthetic: bool, image_size: int = 224) -> nn.Module:
    """An ImageNet registry model for the benchmarks, in eval mode on the CPU.

    Args:
        name: a registry name, or ``timm:<arch>`` for any timm architecture (random weights
            only, e.g. ``timm:vit_tiny_patch16_224`` for quick checks).
        synthetic: random weights (timm models built for ``image_size`` inputs) instead of the
            pretrained ones.
    """
    import timm

    from balf_paper.models import IMAGENET_MODELS, disable_fused_attention

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


def _build_model(info: DatasetInfo, model_name: str, checkpoint: Path | None) -> nn.Module:
    if info.public_weights:
        return create_model(model_name, pretrained=False).eval()
    model = create_model(
        model_name, pretrained=False, in_channels=info.channels, num_classes=info.num_classes
    )
    if checkpoint is not None:
        model_entry(model_name).load_checkpoint(model, checkpoint)  # the family's file format
    return model.eval()


def experiment_data(
    dataset: str,
    root: str | Path,
    model_name: str,
    calib_size: int,
    seed: int = 0,
    eval_size: int | None = None,
    calib_seed: int | None = None,
) -> ExperimentData:
    """Calibration subset (seeded) and evaluation set (whole, or a seeded subset).

    Args:
        root: data folder (``cifar-10-batches-py/`` inside for CIFAR-10; ``cifar10-jpeg/``
            inside, or itself, for the JPEG release; the IDX files for Fashion-MNIST, else the
            standard search path; ``imagenet-calib/`` and ``imagenet-val/`` inside for ImageNet).
        calib_size: calibration images drawn uniformly at random from the training images.
        eval_size: evaluate on a seeded subset of this size (``None``: the full set).
        calib_seed: seed of the calibration draw when it differs from ``seed`` (``--seeds``:
            every seed is evaluated on the subset of ``seed``).
    """
    calib_seed = seed if calib_seed is None else calib_seed
    train, test = dataset_info(dataset).splits(root, preprocessing_of(model_name, dataset))
    calibration = calibration_subset(train, calib_size, calib_seed)
    evaluation = evaluation_subset(test, eval_size, seed)
    tag = f"{dataset}-{model_name}-calib{calib_size}-seed{calib_seed}"
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
    loader = dataset_info(dataset).corrupted
    if loader is None:
        raise BALFError(f"no corrupted test sets for dataset {dataset!r}")
    preprocessing = preprocessing_of(model_name, dataset)
    full = loader(root, corruption, severity, None, preprocessing)
    if eval_size is None or eval_size >= len(full):
        return full
    indices = evaluation_subset(full, eval_size, seed).indices
    return loader(root, corruption, severity, indices, preprocessing)
