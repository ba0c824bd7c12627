"""CIFAR ResNets with option-A (parameter-free) shortcuts, for third-party CIFAR-10 checkpoints.

He et al. (2016), Sec. 4.2: three stages of 16/32/64 channels with ``n`` BasicBlocks each
(depth ``6n + 2``). Where a block changes shape, its shortcut is parameter-free ("option A"):
the input subsampled as ``x[:, :, ::2, ::2]`` and zero-padded with ``planes // 4`` channels on
each side. 3x3 convs have no bias; BN follows every conv; the classifier is ``linear`` (64 -> K).

The attribute names (``conv1``, ``bn1``, ``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``, ``linear``)
are those of the public checkpoints of Y. Idelbayev's "Proper ResNet Implementation for
CIFAR10/CIFAR100 in PyTorch" (files ``resnet20-12fca82f.th`` ...), which
:func:`load_third_party_checkpoint` reads: a ``{"state_dict", "best_prec1"}`` dict whose keys
carry DataParallel's ``module.`` prefix. Those models expect RGB in [0, 1] normalised with the
ImageNet mean/std (:data:`THIRD_PARTY_MEAN`, :data:`THIRD_PARTY_STD`), not CIFAR-10's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from balf.errors import BALFError
from balf_paper.data.preprocessing import Preprocessing
from balf_paper.models.registry import ModelEntry, register_model

__all__ = [
    "THIRD_PARTY_CHECKPOINTS",
    "THIRD_PARTY_MEAN",
    "THIRD_PARTY_STD",
    "OptionABlock",
    "OptionAResNet",
    "PadShortcut",
    "load_third_party_checkpoint",
    "option_a_resnet",
]

#: Input normalisation the third-party checkpoints were trained with (ImageNet statistics).
THIRD_PARTY_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
THIRD_PARTY_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Model name -> (blocks per stage, file name of the public checkpoint).
THIRD_PARTY_CHECKPOINTS: dict[str, tuple[int, str]] = {
    "resnet20a": (3, "resnet20-12fca82f.th"),
    "resnet32a": (5, "resnet32-d509ac18.th"),
    "resnet44a": (7, "resnet44-014dd654.th"),
    "resnet56a": (9, "resnet56-4bfd9763.th"),
}


class PadShortcut(nn.Module):
    """Option-A shortcut: ``(B, C, H, W)`` -> ``(B, C + 2·pad, ceil(H/2), ceil(W/2))``."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class OptionABlock(nn.Module):
    """BasicBlock (two 3x3 conv + BN) with an option-A shortcut where the shape changes.

    Shapes: ``(B, C_in, H, W)`` -> ``(B, planes, H / stride, W / stride)``.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if planes - in_planes != 2 * (planes // 4) or stride != 2:
                raise BALFError(
                    f"option-A shortcut needs stride 2 and planes = 2 * in_planes, got "
                    f"{in_planes} -> {planes} at stride {stride}"
                )
            self.shortcut = PadShortcut(planes // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class OptionAResNet(nn.Module):
    """CIFAR ResNet of depth ``6 · blocks_per_stage + 2`` with option-A shortcuts.

    Args:
        blocks_per_stage: ``n`` (3 for ResNet-20, 5 / 7 / 9 for ResNet-32 / 44 / 56).
        num_classes: classifier outputs ``K``.
        in_channels: image channels ``C``.

    Shapes:
        input ``(B, C, H, W)`` -> logits ``(B, K)``.
    """

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise BALFError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        widths = [(16, 16, 1), (16, 32, 2), (32, 64, 2)]
        for index, (cin, planes, stride) in enumerate(widths, start=1):
            blocks = [OptionABlock(cin, planes, stride)]
            blocks += [OptionABlock(planes, planes) for _ in range(blocks_per_stage - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(x)


def option_a_resnet(name: str, num_classes: int = 10, in_channels: int = 3) -> OptionAResNet:
    """Build ``resnet20a`` / ``resnet32a`` / ``resnet44a`` / ``resnet56a`` (random weights)."""
    if name not in THIRD_PARTY_CHECKPOINTS:
        raise BALFError(
            f"unknown option-A ResNet {name!r}; choose one of {list(THIRD_PARTY_CHECKPOINTS)}"
        )
    blocks, _ = THIRD_PARTY_CHECKPOINTS[name]
    return OptionAResNet(blocks, num_classes=num_classes, in_channels=in_channels)


def load_third_party_checkpoint(model: nn.Module, path: str | os.PathLike) -> dict[str, float]:
    """Load a public option-A checkpoint (``{"state_dict", "best_prec1"}``) into ``model``.

    The ``module.`` prefix of DataParallel checkpoints is removed; loading is strict and never
    unpickles code (``weights_only=True``).

    Returns:
        ``{"best_prec1": ...}`` when the file stores it (the published test accuracy, %).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message says where the files come from).
        BALFError: the file is not such a checkpoint or its keys/shapes do not match ``model``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"third-party CIFAR-10 checkpoint not found: {path}. The files resnet20-12fca82f.th, "
            "resnet32-d509ac18.th, resnet44-014dd654.th and resnet56-4bfd9763.th are published in "
            "the GitHub repository akamaster/pytorch_resnet_cifar10 (folder pretrained_models/); "
            "pass the file with --checkpoint."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # text, empty or truncated files raise pickle/zip/EOF errors
        raise BALFError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}); "
            "download the file again from akamaster/pytorch_resnet_cifar10"
        ) from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise BALFError(f"{path}: expected a dict with a 'state_dict' entry (option-A checkpoint)")
    state = {str(k).removeprefix("module."): v for k, v in payload["state_dict"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise BALFError(f"{path} does not match {type(model).__name__}: {exc}") from exc
    meta = {}
    if "best_prec1" in payload:
        value = payload["best_prec1"]
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BALFError(
                f"{path}: 'best_prec1' is {value!r}, not a number (the published accuracy in %); "
                "download the file again from akamaster/pytorch_resnet_cifar10"
            )
        meta["best_prec1"] = float(value)
    return meta


def _builder(name: str) -> Callable[..., nn.Module]:
    def build(pretrained: bool, num_classes: int | None, in_channels: int | None) -> nn.Module:
        if pretrained:
            raise BALFError(
                f"{name} is built with pretrained=False; load the public checkpoint "
                f"{THIRD_PARTY_CHECKPOINTS[name][1]} with "
                "balf_paper.models.load_third_party_checkpoint(model, path)"
            )
        return option_a_resnet(
            name,
            num_classes=10 if num_classes is None else num_classes,
            in_channels=3 if in_channels is None else in_channels,)

    return build


_PREPROCESSING = Preprocessing(THIRD_PARTY_MEAN, THIRD_PARTY_STD)

for _name in THIRD_PARTY_CHECKPOINTS:
    register_model(
        ModelEntry(
            _name, _builder(_name), lambda dataset: _PREPROCESSING, load_third_party_checkpoint,
            "cifar-option-a",
        )
    )  # fmt: skip
