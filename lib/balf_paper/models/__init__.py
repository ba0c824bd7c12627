"""Model zoo of the paper: CIFAR ResNet-20/56 and the ImageNet registry, plus checkpoint I/O.

Example:
    >>> from balf_paper.models import create_model, eval_transform, list_models
    >>> model = create_model("resnet20", pretrained=False, in_channels=1)
    >>> tf = eval_transform("resnet50")  # PIL image -> (3, 224, 224) tensor
"""

from __future__ import annotations

import numbers
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy
import torch
from torch import nn

from balf.errors import BALFError
from balf.io.atomic import atomic_torch_save
from balf_paper.data.preprocessing import Preprocessing
from balf_paper.data.registry import dataset_info
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
    build_imagenet_model,
    disable_fused_attention,
    eval_preprocessing,
)
from balf_paper.models.sample_models import (
    MODEL_LABELS,  # registers mobilenet_v2_q8, efficientnet_lite0
)

if TYPE_CHECKING:  # imported on use: scripts' --help stays fast
    from torchvision import transforms as T

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
    "preprocessing_of",
    "resnet20",
    "resnet56",
    "save_checkpoint",
]

_CIFAR_MODELS = {"resnet20": resnet20, "resnet56": resnet56}

CHECKPOINT_FORMAT = "balf-checkpoint-v1"


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, CIFAR models first."""
    return list(_CIFAR_MODELS) + list(THIRD_PARTY_CHECKPOINTS) + list(IMAGENET_MODELS)


def preprocessing_of(name: str, dataset: str = "cifar10") -> Preprocessing:
    """The evaluation preprocessing model ``name`` declares for images of ``dataset``.

    ImageNet models declare their checkpoint's (resize, crop, interpolation, normalisation); the
    third-party option-A checkpoints (``resnet20a`` ...) were trained with the ImageNet mean/std;
    the repository's CIFAR ResNets use the training dataset's own normalisation.

    Raises:
        BALFError: an unknown model, or an unknown dataset for a small-image model.
    """
    if name in IMAGENET_MODELS:
        return eval_preprocessing(name)
    if name in THIRD_PARTY_CHECKPOINTS:
        return Preprocessing(THIRD_PARTY_MEAN, THIRD_PARTY_STD)
    if name in _CIFAR_MODELS:
        return dataset_info(dataset).preprocessing
    raise BALFError(f"Unknown model {name!r}; choose one of {list_models()}")


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
    payload = _read_torch_file(
        Path(path), map_location, "a checkpoint written by balf_paper.models.save_checkpoint"
    )
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise BALFError(f"{path} is not a balf checkpoint (written by save_checkpoint)")
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise BALFError(
            f"{path} does not match {type(model).__name__} (another --model?): {exc}"
        ) from exc
    return dict(payload["metadata"])


_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def _read_torch_file(path: Path, map_location: str | torch.device, expected: str) -> Any:
    """``torch.load(path, weights_only=True)``, or a BALFError saying what the file is instead.

    Args:
        expected: what the file should be, for the message (``"a balf checkpoint"``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        BALFError: the file is a Git LFS pointer (the weights were never fetched), empty or
            truncated, not a PyTorch file, or holds objects ``weights_only`` loading refuses
            (nothing is unpickled beyond tensors and plain data).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LFS_POINTER))
    except IsADirectoryError:
        raise BALFError(f"{path} is a folder, not {expected}; pass the file") from None
    if head == _LFS_POINTER:
        raise BALFError(
            f"{path} is a Git LFS pointer, not the weights: fetch them (git lfs pull) or pass "
            "the downloaded file"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            raise BALFError(
                f"{path} holds Python objects other than tensors and plain data, which balf "
                "does not unpickle (weights_only=True); save the state_dict instead of the "
                "model object (balf_paper.models.save_checkpoint)"
            ) from None
        raise BALFError(f"{path} is not {expected}: it cannot be unpickled ({exc})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise BALFError(
            f"{path} is not {expected}: it is empty, truncated or of another format "
            f"({type(exc).__name__}: {str(exc).split('. ')[0]}); "
            "copy or train it again"
        ) from None
