"""Model zoo of the paper: CIFAR ResNet-20/56, the third-party option-A CIFAR ResNets and the
ImageNet models, all in one registry (:mod:`balf_paper.models.registry`), plus checkpoint I/O.

Example:
    >>> from balf_paper.models import create_model, eval_transform, list_models
    >>> model = create_model("resnet20", pretrained=False, in_channels=1)
    >>> tf = eval_transform("resnet50")  # PIL image -> (3, 224, 224) tensor
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from balf_paper.data.preprocessing import Preprocessing
from balf_paper.models.checkpoints import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from balf_paper.models.cifar_resnet import BasicBlock, CifarResNet, resnet20, resnet56
from balf_paper.models.cifar_resnet_a import (
    THIRD_PARTY_CHECKPOINTS,
    OptionAResNet,
    load_third_party_checkpoint,
)
from balf_paper.models.imagenet import (
    IMAGENET_MODELS,
    ImageNetModel,
    disable_fused_attention,
    eval_preprocessing,
)
from balf_paper.models.registry import ModelEntry, model_entry, register_model, registered_models
from balf_paper.models.sample_models import (
    MODEL_LABELS,  # registers mobilenet_v2_q8, efficientnet_lite0
)

if TYPE_CHECKING:  # imported on use: scripts' --help stays fast
    from torchvision import transforms as T

__all__ = [
    "BasicBlock",
    "CHECKPOINT_FORMAT",
    "CifarResNet",
    "IMAGENET_MODELS",
    "ImageNetModel",
    "MODEL_LABELS",
    "ModelEntry",
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
    "model_entry",
    "normalisation_of",
    "preprocessing_of",
    "register_model",
    "resnet20",
    "resnet56",
    "save_checkpoint",
]


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, in registration order (CIFAR models first)."""
    return list(registered_models())


def preprocessing_of(name: str, dataset: str = "cifar10") -> Preprocessing:
    """The evaluation preprocessing model ``name`` declares for images of ``dataset``.

    ImageNet models declare their checkpoint's (resize, crop, interpolation, normalisation); the
    third-party option-A checkpoints (``resnet20a`` ...) were trained with the ImageNet mean/std;
    the repository's CIFAR ResNets use the training dataset's own normalisation.

    Raises:
        BALFError: an unknown model, or an unknown dataset for a small-image model.
    """
    return model_entry(name).preprocessing(dataset)


def normalisation_of(name: str, dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of :func:`preprocessing_of`."""
    preprocessing = preprocessing_of(name, dataset)
    return preprocessing.mean, preprocessing.std


def create_model(
    name: str,
    *,
    pretrained: bool = True,
    num_classes: int | None = None,
    in_channels: int | None = None,
) -> nn.Module:
    """Build a registered model by name.

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
    return model_entry(name).build(pretrained, num_classes, in_channels)


def eval_transform(name: str, *, dataset: str = "cifar10") -> T.Compose:
    """Evaluation preprocessing of a model as a transform (:func:`preprocessing_of`).

    Args:
        name: a :func:`list_models` name.
        dataset: for CIFAR ResNets only, the registered dataset whose normalisation to use
            (e.g. ``"cifar10"``, ``"fashion-mnist"``); ignored for ImageNet models.

    Returns:
        A transform mapping a PIL image to a normalised tensor: ``(3, 224, 224)`` for ImageNet
        models, ``(C, H, W)`` unchanged in size for CIFAR models.
    """
    return preprocessing_of(name, dataset).transform()
