"""Model zoo of the paper: CIFAR ResNet-20/56 and the ImageNet registry, plus checkpoint I/O.

Example:
    >>> from balf_paper.models import create_model, eval_transform, list_models
    >>> model = create_model("resnet20", pretrained=False, in_channels=1)
    >>> tf = eval_transform("resnet50")  # PIL image -> (3, 224, 224) tensor
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

import numpy
import torch
from torch import nn
from torchvision import transforms as T

from balf.io.atomic import atomic_torch_save
from balf.errors import BALFError
from balf_paper.models.cifar_resnet import BasicBlock, CifarResNet, resnet20, resnet56
from balf_paper.models.cifar_resnet_a import (
    THIRD_PARTY_CHECKPOINTS,
    THIRD_PARTY_MEAN,
    THIRD_PARTY_STD,
    OptionAResNet,
    load_third_party_checkpoint,
    option_a_resnet,
)
from balf_paper.models.imagenet import (
    IMAGENET_MODELS,
    ImageNetModel,
    Preprocessing,
    build_imagenet_model,
    disable_fused_attention,
    eval_preprocessing,
)
from balf_paper.models.sample_models import MODEL_LABELS  # registers mobilenet_v2_q8, efficientnet_lite0

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "IMAGENET_MODELS",
    "ImageNetModel",
    "MODEL_LABELS",
    "OptionAResNet",
    "THIRD_PARTY_CHECKPOINTS",
    "Preprocessing",
    "create_model",
    "disable_fused_attention",
    "eval_preprocessing",
    "eval_transform",
    "list_models",
    "load_checkpoint",
    "load_third_party_checkpoint",
    "normalisation_of",
    "resnet20",
    "resnet56",
    "save_checkpoint",
]

_CIFAR_MODELS = {"resnet20": resnet20, "resnet56": resnet56}

CHECKPOINT_FORMAT = "balf-checkpoint-v1"


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, CIFAR models first."""
    return list(_CIFAR_MODELS) + list(THIRD_PARTY_CHECKPOINTS) + list(IMAGENET_MODELS)


def normalisation_of(name: str, dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` a small-image model expects on ``dataset``.

    The repository's CIFAR ResNets use the training dataset's statistics; the third-party
    option-A checkpoints (``resnet20a`` ...) were trained with the ImageNet mean/std.

    Raises:
        BALFError: for an unknown small-image dataset.
    """
    if name in THIRD_PARTY_CHECKPOINTS:
        return THIRD_PARTY_MEAN, THIRD_PARTY_STD
    from balf_paper.data.registry import dataset_info  # the registry imports this package

    info = dataset_info(dataset)
    return info.mean, info.std


def create_model(
    name: str,
    *,
    pretrained: bool = True,
    num_classes: int | None = None,
    in_channels: int | None = None,
) -> nn.Module:
    """Build a model by name.

    Args:
        name: one of :func:`list_models` (``"resnet20"``, ``"resnet56"``, ``"resnet18"``, ...).
        pretrained: load the public pretrained weights (ImageNet models only). CIFAR ResNets are
            trained by this repository: build them with ``pretrained=False`` and load the
            checkpoint with :func:`load_checkpoint`.
        num_classes: classifier size ``K`` (default 10 for CIFAR models, 1000 for ImageNet).
        in_channels: image channels ``C`` (default 3).

    Returns:
        The model (train mode, CPU). CIFAR models map ``(B, C, H, W) -> (B, K)``; ImageNet
        models ``(B, 3, 224, 224) -> (B, K)``.

    Raises:
        BALFError: unknown name, incompatible arguments, or ``pretrained=True`` for a CIFAR model.
        WeightsNotFoundError: pretrained weights cannot be fetched; the message says which file
            to place where.

    Example:
        >>> model = create_model("resnet56", pretrained=False)
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    if name in _CIFAR_MODELS:
        if pretrained:
            raise BALFError(
                f"{name} has no downloadable weights: build it with pretrained=False and load "
                "a checkpoint trained by scripts/cifar10/pretrain_resnet.py with "
                "balf_paper.models.load_checkpoint(model, path)"
            )
        return _CIFAR_MODELS[name](
            num_classes=10 if num_classes is None else num_classes,
            in_channels=3 if in_channels is None else in_channels,
        )
    if name in THIRD_PARTY_CHECKPOINTS:
        if pretrained:
            raise BALFError(
                f"{name} is built with pretrained=False; load the public checkpoint "
                f"{THIRD_PARTY_CHECKPOINTS[name][1]} with "
                "balf_paper.models.load_third_party_checkpoint(model, path)"
            )
        return option_a_resnet(
            name,
            num_classes=10 if num_classes is None else num_classes,
            in_channels=3 if in_channels is None else in_channels,
        )
    if name in IMAGENET_MODELS:
        return build_imagenet_model(
            name, pretrained=pretrained, num_classes=num_classes, in_channels=in_channels
        )
    raise BALFError(f"Unknown model {name!r}; choose one of {list_models()}")


def eval_transform(name: str, *, dataset: str = "cifar10") -> T.Compose:
    """Evaluation preprocessing of a model.

    Args:
        name: a :func:`list_models` name.
        dataset: for CIFAR ResNets only, the registered dataset whose normalisation to use
            (e.g. ``"cifar10"``, ``"fashion-mnist"``); ignored for ImageNet models.

    Returns:
        A transform mapping a PIL image to a normalised tensor: ``(3, 224, 224)`` for ImageNet
        models, ``(C, H, W)`` unchanged in size for CIFAR models.
    """
    if name in IMAGENET_MODELS:
        return eval_preprocessing(name).transform()
    if name in _CIFAR_MODELS or name in THIRD_PARTY_CHECKPOINTS:
        mean, std = normalisation_of(name, dataset)
        return T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    raise BALFError(f"Unknown model {name!r}; choose one of {list_models()}")


def _plain(value: Any) -> Any:
    """Convert metadata to builtin types that ``torch.load(weights_only=True)`` accepts.

    ``str`` subclasses (e.g. ``torch.__version__``) and paths become ``str``, numpy scalars
    become ``int``/``float``/``bool``, tuples become lists.
    """
    if value is None:
        return None
    if isinstance(value, str | os.PathLike):
        return os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if isinstance(value, bool | numpy.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    raise BALFError(f"Checkpoint metadata must be plain data, got {type(value).__name__}")


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike, *, extra: dict[str, Any] | None = None, **metadata
) -> Path:
    """Atomically write ``model``'s weights and JSON-like metadata to ``path``.

    The file is written to a temporary file in the same directory and moved into place with
    ``os.replace``, so an interrupted write never leaves a truncated checkpoint.

    Args:
        model: the module whose ``state_dict`` is stored.
        path: destination file (parent directories are created).
        extra: further top-level entries (e.g. optimizer state) stored next to the weights;
            they must be loadable with ``torch.load(weights_only=True)``.
        **metadata: plain values (str, int, float, bool, lists/dicts of them) such as
            ``arch="resnet20", dataset="cifar10", test_acc=0.92``.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = dict(extra or {})
    payload.update(
        {
            "format": CHECKPOINT_FORMAT,
            "state_dict": model.state_dict(),
            "metadata": _plain(metadata),
        }
    )
    atomic_torch_save(payload, path)
    return path


def load_checkpoint(
    model: nn.Module, path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load weights written by :func:`save_checkpoint` into ``model`` (strictly).

    Args:
        model: a module with the same architecture as the saved one.
        path: checkpoint file.
        map_location: where to put the loaded tensors before copying them into ``model``.

    Returns:
        The metadata stored with the weights.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        BALFError: if the file is not a balf checkpoint.

    Example:
        >>> model = create_model("resnet20", pretrained=False, in_channels=1)
        >>> meta = load_checkpoint(model, "results/fashion-mnist/checkpoints/resnet20/model.pt")
    """
    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise BALFError(f"{path} is not a balf checkpoint (written by save_checkpoint)")
    model.load_state_dict(payload["state_dict"])
    return dict(payload["metadata"])
