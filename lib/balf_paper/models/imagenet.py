"""Registry of the ImageNet-1k models of the paper, each with its evaluation preprocessing.

CNNs come from torchvision (``IMAGENET1K_V1`` weights), ViT/DeiT from timm with fused attention
turned off so that ``FlopCounterMode`` sees (and counts) the attention matmuls. Pretrained
weights are read from the usual caches; where they cannot be fetched (no network) a
:class:`~balf.errors.WeightsNotFoundError` says which file to place where.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from balf.errors import BALFError, WeightsNotFoundError
from balf_paper.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from balf_paper.models.registry import ModelEntry, register_model

__all__ = [
    "IMAGENET_MODELS",
    "ImageNetModel",
    "build_imagenet_model",
    "register_imagenet_model",
    "disable_fused_attention",
    "eval_preprocessing",
    "timm_weights_path",
    "torchvision_weights_path",
]

logger = logging.getLogger(__name__)

HALF: tuple[float, float, float] = (0.5, 0.5, 0.5)


CNN_PREPROCESSING = Preprocessing(IMAGENET_MEAN, IMAGENET_STD, 256, 224, "bilinear")


@dataclass(frozen=True)
class ImageNetModel:
    """One registry entry.

    Attributes:
        name: registry name (``create_model`` argument).
        library: ``"torchvision"`` or ``"timm"``.
        arch: the library's model name (torchvision builder / timm architecture).
        weights: torchvision weights enum member name (``"IMAGENET1K_V1"``) or timm pretrained
            tag (e.g. ``"augreg2_in21k_ft_in1k"``).
        preprocessing: evaluation preprocessing of the pretrained checkpoint.
        builder: ``(pretrained, num_classes) -> model`` for models built from a local file or a
            package (e.g. ``mobilenet_v2_q8``, ``efficientnet_lite0``); ``None``: the library's.
    """

    name: str
    library: str
    arch: str
    weights: str
    preprocessing: Preprocessing
    builder: Callable[[bool, int], nn.Module] | None = None


IMAGENET_MODELS: dict[str, ImageNetModel] = {
    entry.name: entry
    for entry in (
        ImageNetModel("resnet18", "torchvision", "resnet18", "IMAGENET1K_V1", CNN_PREPROCESSING),
        ImageNetModel("resnet50", "torchvision", "resnet50", "IMAGENET1K_V1", CNN_PREPROCESSING),
        ImageNetModel(
            "mobilenet_v2", "torchvision", "mobilenet_v2", "IMAGENET1K_V1", CNN_PREPROCESSING
        ),
        ImageNetModel(
            "resnext50_32x4d", "torchvision", "resnext50_32x4d", "IMAGENET1K_V1", CNN_PREPROCESSING
        ),
        ImageNetModel(
            "resnext101_32x8d",
            "torchvision",
            "resnext101_32x8d",
            "IMAGENET1K_V1",
            CNN_PREPROCESSING,
        ),
        ImageNetModel(
            "vit_b_16",
            "timm",
            "vit_base_patch16_224",
            "augreg2_in21k_ft_in1k",
            Preprocessing(HALF, HALF, 248, 224, "bicubic"),
        ),
        ImageNetModel(
            "deit_b_16",
            "timm",
            "deit_base_patch16_224",
            "fb_in1k",
            Preprocessing(IMAGENET_MEAN, IMAGENET_STD, 248, 224, "bicubic"),
        ),
    )
}


def _hub_checkpoints_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def torchvision_weights_path(entry: ImageNetModel) -> Path:
    """Path where torchvision looks for (and caches) the entry's pretrained weights file."""
    import torchvision  # imported on use (start-up time), as timm below

    weights = torchvision.models.get_model_weights(entry.arch)[entry.weights]
    return _hub_checkpoints_dir() / Path(weights.url).name


def timm_weights_path(entry: ImageNetModel) -> Path:
    """Local weights file ``<arch>.<tag>.safetensors`` that is loaded when present."""
    return _hub_checkpoints_dir() / f"{entry.arch}.{entry.weights}.safetensors"


def disable_fused_attention(model: nn.Module) -> int:
    """Turn off fused (SDPA) attention in every timm ``Attention`` block of ``model``.

    The explicit ``q @ k^T`` / ``attn @ v`` path is then used, whose FLOPs are counted by
    ``torch.utils.flop_counter.FlopCounterMode``.

    Returns:
        The number of attention blocks changed.
    """
    from timm.layers import Attention

    count = 0
    for module in model.modules():
        if isinstance(module, Attention):
            module.fused_attn = False
            count += 1
    return count


def _build_torchvision(entry: ImageNetModel, pretrained: bool, num_classes: int) -> nn.Module:
    import torchvision

    model = torchvision.models.get_model(entry.arch, weights=None, num_classes=num_classes)
    if not pretrained:
        return model
    weights = torchvision.models.get_model_weights(entry.arch)[entry.weights]
    target = torchvision_weights_path(entry)
    try:
        state_dict = torch.hub.load_state_dict_from_url(
            weights.url, progress=False, check_hash=True, weights_only=True
        )
    except (OSError, RuntimeError) as exc:
        raise WeightsNotFoundError(
            f"Could not fetch the pretrained weights of {entry.name} "
            f"(torchvision {entry.arch}, {entry.weights}) from {weights.url}: {exc}.\n"
            f"Place the file '{target.name}' at {target} "
            "(the directory is torch.hub.get_dir()/checkpoints; set TORCH_HOME to move it)."
        ) from exc
    model.load_state_dict(state_dict)
    return model


def _build_timm(
    entry: ImageNetModel, pretrained: bool, num_classes: int, in_channels: int
) -> nn.Module:
    import timm

    name = f"{entry.arch}.{entry.weights}"
    kwargs: dict = {"num_classes": num_classes, "in_chans": in_channels}
    local_file = timm_weights_path(entry)
    if pretrained and local_file.is_file():
        logger.info("Loading %s weights from %s", entry.name, local_file)
        kwargs["pretrained_cfg_overlay"] = {"file": str(local_file)}
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as exc:  # noqa: BLE001 - hub/network errors come in many types
        if not pretrained:
            raise
        raise WeightsNotFoundError(
            f"Could not fetch the pretrained weights of {entry.name} (timm '{name}', "
            f"Hugging Face repo timm/{name}): {exc}.\n"
            f"Download 'model.safetensors' of timm/{name} elsewhere and place it at "
            f"{local_file}; it is then loaded automatically (equivalent to "
            f"timm.create_model('{name}', pretrained=True, "
            f"pretrained_cfg_overlay=dict(file='{local_file}')))."
        ) from exc
    disable_fused_attention(model)
    return model


def build_imagenet_model(
    name: str,
    *,
    pretrained: bool = True,
    num_classes: int | None = None,
    in_channels: int | None = None,
) -> nn.Module:
    """Build a registry model; see :func:`balf_paper.models.create_model` for the arguments.

    Returns:
        The model in train mode; input ``(B, 3, 224, 224)`` -> logits ``(B, num_classes)``.
    """
    if name not in IMAGENET_MODELS:
        raise BALFError(f"Unknown ImageNet model {name!r}; known: {sorted(IMAGENET_MODELS)}")
    entry = IMAGENET_MODELS[name]
    classes = 1000 if num_classes is None else num_classes
    channels = 3 if in_channels is None else in_channels
    if pretrained and (classes != 1000 or channels != 3):
        raise BALFError(
            f"Pretrained {name} has 1000 classes and 3 input channels; "
            f"got num_classes={classes}, in_channels={channels} (use pretrained=False)"
        )
    if entry.builder is not None:
        if channels != 3:
            raise BALFError(f"{name} supports only in_channels=3, got {channels}")
        return entry.builder(pretrained, classes)
    if entry.library == "torchvision":
        if channels != 3:
            raise BALFError(f"{name} (torchvision) supports only in_channels=3, got {channels}")
        return _build_torchvision(entry, pretrained, classes)
    return _build_timm(entry, pretrained, classes, channels)


def eval_preprocessing(name: str) -> Preprocessing:
    """Evaluation :class:`Preprocessing` of an ImageNet registry model."""
    if name not in IMAGENET_MODELS:
        raise BALFError(f"Unknown ImageNet model {name!r}; known: {sorted(IMAGENET_MODELS)}")
    return IMAGENET_MODELS[name].preprocessing


def register_imagenet_model(entry: ImageNetModel) -> ImageNetModel:
    """Add ``entry`` to :data:`IMAGENET_MODELS` and to the model registry
    (:mod:`balf_paper.models.registry`): built by :func:`build_imagenet_model`, preprocessed
    as its checkpoint declares whatever the dataset."""
    IMAGENET_MODELS[entry.name] = entry

    def build(pretrained: bool, num_classes: int | None, in_channels: int | None) -> nn.Module:
        return build_imagenet_model(
            entry.name, pretrained=pretrained, num_classes=num_classes, in_channels=in_channels
        )

    register_model(ModelEntry(entry.name, build, lambda dataset: entry.preprocessing, None,
                              entry.library))  # fmt: skip
    return entry


for _entry in list(IMAGENET_MODELS.values()):
    register_imagenet_model(_entry)
