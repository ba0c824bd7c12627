"""Models and data of an experiment, by dataset name: one code path for every dataset.

The datasets are those of :mod:`balf.data.registry` (``cifar10``, ``cifar10-jpeg``,
``fashion-mnist``, ``imagenet``, and any registered later). Calibration images are a seeded subset
of the train split, evaluation uses the test split; both always use the evaluation preprocessing
(no augmentation). Small datasets' weights are ``results/<dataset>/checkpoints/<model>/model.pt``;
datasets with public weights (ImageNet) need no checkpoint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data import calibration_subset, evaluation_subset
from ..data.registry import DatasetInfo, dataset_info, registered_datasets
from ..errors import BALFError
from ..models import create_model, load_checkpoint

__all__ = [
    "DATASETS",
    "benchmark_model",
    "ExperimentData",
    "corrupted_evaluation",
    "default_checkpoint",
    "experiment_data",
    "experiment_model",
]

DATASETS = registered_datasets()
"""The built-in datasets' names (every registered one: :func:`balf.data.registered_datasets`)."""


@dataclass
class ExperimentData:
    """Calibration and evaluation sets of an experiment, and the calibration data's identity."""

    calibration: Dataset
    evaluation: Dataset
    data_tag: str


def default_checkpoint(dataset: str, model_name: str, results_root: str | Path = "results") -> Path:
    """Where the repository's pretraining script writes a small-dataset model."""
    return Path(results_root) / dataset / "checkpoints" / model_name / "model.pt"


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
    path = Path(checkpoint) if checkpoint else default_checkpoint(dataset, model_name)
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained {model_name} for {dataset} at {path}: train one with "
            f"scripts/cifar10/pretrain_resnet.py --dataset {dataset} --arch {model_name} "
            f"--out-dir {path.parent} (or pass --checkpoint)"
        )
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


def _build_model(info: DatasetInfo, model_name: str, checkpoint: Path | None) -> nn.Module:
    if info.public_weights:
        return create_model(model_name, pretrained=False).eval()
    model = create_model(
        model_name, pretrained=False, in_channels=info.channels, num_classes=info.num_classes
    )
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()


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
        root: data folder (``cifar-10-batches-py/`` inside for CIFAR-10; ``cifar10-jpeg/``
            inside, or itself, for the JPEG release; the IDX files for Fashion-MNIST, else the
            standard search path; ``imagenet-calib/`` and ``imagenet-val/`` inside for ImageNet).
        calib_size: calibration images drawn uniformly at random from the training images.
        eval_size: evaluate on a seeded subset of this size (``None``: the full set).
    """
    train, test = dataset_info(dataset).splits(root, model_name)
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
) -> Dataset:
    """One (corruption, severity) test set in the CIFAR-10-C layout (CIFAR-10-C or Fashion-MNIST-C).

    A fixed seeded subset of ``eval_size`` positions is used for every corruption and severity.
    """
    loader = dataset_info(dataset).corrupted
    if loader is None:
        raise BALFError(f"no corrupted test sets for dataset {dataset!r}")
    full = loader(root, corruption, severity, None)
    if eval_size is None or eval_size >= len(full):
        return full
    return loader(root, corruption, severity, evaluation_subset(full, eval_size, seed).indices)
