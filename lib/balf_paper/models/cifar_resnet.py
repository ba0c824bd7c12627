"""CIFAR-style ResNets (He et al., 2016, Sec. 4.2) with 1x1 conv + BN projection shortcuts.

Three stages of 16/32/64 channels with ``n`` BasicBlocks each (depth ``6n + 2``): ResNet-20 has
``n = 3`` and about 0.27M parameters, ResNet-56 has ``n = 9`` and about 0.85M. The attribute names
are fixed (``conv1``, ``bn1``, ``layer1..layer3``, blocks with ``conv1, bn1, conv2, bn2,
shortcut``, classifier ``fc``) because structural baselines walk this module tree.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from balf.errors import BALFError
from balf_paper.data.preprocessing import Preprocessing
from balf_paper.data.registry import dataset_info
from balf_paper.models.checkpoints import load_checkpoint
from balf_paper.models.registry import ModelEntry, register_model

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet56"]

STAGE_WIDTHS: tuple[int, int, int] = (16, 32, 64)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with a residual connection.

    The shortcut is ``nn.Identity()`` when input and output shapes match and otherwise
    ``nn.Sequential(conv1x1(stride), BatchNorm2d)`` (option B of the ResNet paper).

    Args:
        in_planes: input channels ``C_in``.
        planes: output channels ``C_out``.
        stride: stride of the first conv and of the projection shortcut.

    Shapes:
        input ``(B, C_in, H, W)`` -> output ``(B, C_out, H / stride, W / stride)``.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, H', W')``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet of depth ``6 * blocks_per_stage + 2`` for small (e.g. 32x32 or 28x28) images.

    Args:
        blocks_per_stage: number ``n`` of BasicBlocks in each of the three stages.
        num_classes: size of the classifier output ``K``.
        in_channels: image channels ``C`` (3 for CIFAR-10, 1 for Fashion-MNIST).

    Shapes:
        input ``(B, C, H, W)`` -> logits ``(B, K)``.

    Example:
        >>> model = CifarResNet(3, num_classes=10, in_channels=1)
        >>> model(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        self.blocks_per_stage = blocks_per_stage
        self.num_classes = num_classes
        self.in_channels = in_channels
        w1, w2, w3 = STAGE_WIDTHS
        self.conv1 = nn.Conv2d(in_channels, w1, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_stage(w1, w1, blocks_per_stage, stride=1)
        self.layer2 = self._make_stage(w1, w2, blocks_per_stage, stride=2)
        self.layer3 = self._make_stage(w2, w3, blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, num_classes)
        self._init_weights()

    @staticmethod
    def _make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, num_classes)`` logits."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet20(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-20 (3 blocks per stage, ~0.27M parameters)."""
    return CifarResNet(3, num_classes=num_classes, in_channels=in_channels)


def resnet56(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-56 (9 blocks per stage, ~0.85M parameters)."""
    return CifarResNet(9, num_classes=num_classes, in_channels=in_channels)


def _dataset_preprocessing(dataset: str) -> Preprocessing:
    """A model trained here normalises like its training dataset."""
    return dataset_info(dataset).preprocessing


def _builder(name: str, factory: Callable[..., CifarResNet]) -> Callable[..., nn.Module]:
    def build(pretrained: bool, num_classes: int | None, in_channels: int | None) -> nn.Module:
        if pretrained:
            raise BALFError(
                f"{name} has no downloadable weights: build it with pretrained=False and load "
                "a checkpoint trained by scripts/cifar10/pretrain_resnet.py with "
                "balf_paper.models.load_checkpoint(model, path)"
            )
        return factory(
            num_classes=10 if num_classes is None else num_classes,
            in_channels=3 if in_channels is None else in_channels,)

    return build


for _name, _factory in (("resnet20", resnet20), ("resnet56", resnet56)):
    build = _builder(_name, _factory)
    register_model(ModelEntry(_name, build, _dataset_preprocessing, load_checkpoint, "cifar"))
