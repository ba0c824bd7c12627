"""``mobilenet_v2_q8``: torchvision's MobileNetV2 rebuilt in float from its int8 TorchScript file.

The file ``mobilenet_quantized.pt`` (torchvision's ``IMAGENET1K_QNNPACK_V1`` quantized
MobileNetV2, traced and saved with ``optimize_for_mobile``; published in the GitHub repository
pytorch/ios-demo-app as
``PyTorchDemo/PyTorchDemo/ImageClassification/model/mobilenet_quantized.pt``)
holds every convolution (BatchNorm already folded in) and the classifier as packed int8 weights.
:func:`mobilenet_v2_q8` unpacks each one (``torch.ops.quantized.conv2d_unpack`` /
``linear_unpack``), dequantizes it, and loads the float weights *strictly* into
``torchvision.models.mobilenet_v2()``: each conv's folded bias goes into the BatchNorm that follows
it, which is otherwise the identity (weight 1, running mean 0, running variance ``1 - eps``), so
every BatchNorm computes ``x + b``. The rebuild is checked against the traced int8 model's own
outputs on a fixed input before it is returned.

The weights are int8 approximations of torchvision's float originals: results are labelled
"MobileNetV2 (weights dequantized from torchvision's int8 release)". A user with the float
``IMAGENET1K_V1`` checkpoint uses ``mobilenet_v2`` instead.

Where the file is looked up: the ``path`` argument, else the environment variable
:data:`MOBILENET_Q8_ENV`, else :data:`MOBILENET_Q8_DEFAULT` (relative to the working directory).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from balf.errors import BALFError, WeightsNotFoundError

__all__ = [
    "MOBILENET_Q8_DEFAULT",
    "MOBILENET_Q8_ENV",
    "MOBILENET_Q8_LABEL",
    "dequantized_state_dict",
    "mobilenet_q8_path",
    "mobilenet_v2_q8",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the int8 TorchScript file.
MOBILENET_Q8_ENV = "BALF_MOBILENET_V2_Q8"
#: Where the file is looked up when neither the argument nor the variable is set.
MOBILENET_Q8_DEFAULT = Path("../shared/models/mobilenet-v2-qnnpack/mobilenet_quantized.pt")
#: How results name the model's weights.
MOBILENET_Q8_LABEL = "MobileNetV2 (weights dequantized from torchvision's int8 release)"
_SOURCE = (
    "It is torchvision's quantized MobileNetV2 (IMAGENET1K_QNNPACK_V1) traced as TorchScript, "
    "published in the GitHub repository pytorch/ios-demo-app as "
    "PyTorchDemo/PyTorchDemo/ImageClassification/model/mobilenet_quantized.pt. Pass its path, or "
    f"set {MOBILENET_Q8_ENV}=/path/to/mobilenet_quantized.pt. With torchvision's float "
    "IMAGENET1K_V1 checkpoint use the model 'mobilenet_v2' instead."
)
_HOISTED = re.compile(
    r'getattr\(self, "(_jit_pass_hoist_conv_packed_params\.(.+)\._packed_params\.\d+)"\)'
)
#: Minimum cosine similarity between the rebuild's and the traced model's logits.
MIN_COSINE = 0.9


def mobilenet_q8_path(path: str | os.PathLike | None = None) -> Path:
    """The int8 file: ``path``, else ``$BALF_MOBILENET_V2_Q8``, else :data:`MOBILENET_Q8_DEFAULT`.

    Raises:
        WeightsNotFoundError: the file does not exist; the message says where it comes from.
    """
    chosen = Path(path or os.environ.get(MOBILENET_Q8_ENV) or MOBILENET_Q8_DEFAULT)
    if not chosen.is_file():
        raise WeightsNotFoundError(
            f"mobilenet_v2_q8: int8 weights file not found: {chosen}. {_SOURCE}"
        )
    return chosen


def _load_traced(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - TorchScript raises many types
            raise BALFError(
                f"mobilenet_v2_q8: {path} is not a loadable TorchScript file ({exc}). {_SOURCE}"
            ) from exc


def _conv_bn_pairs(model: nn.Module) -> dict[str, str]:
    """``conv name -> name of the BatchNorm2d that follows it`` in module order."""
    pairs: dict[str, str] = {}
    pending: str | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            pending = name
        elif isinstance(module, nn.BatchNorm2d) and pending is not None:
            pairs[pending] = name
            pending = None
    return pairs


def dequantized_state_dict(traced: torch.jit.ScriptModule, model: nn.Module) -> dict[str, Tensor]:
    """Float ``state_dict`` for ``model`` (a torchvision MobileNetV2) from the traced int8 model.

    Args:
        traced: the TorchScript module whose ``forward`` reads hoisted conv packed params
            (``_jit_pass_hoist_conv_packed_params.<conv name>._packed_params.<k>``) and whose
            ``classifier.1`` holds linear packed params.
        model: the float model to fill; its convs have no bias and are each followed by a
            ``BatchNorm2d``.

    Returns:
        A complete state dict: conv weights ``(C_out, C_in/g, kh, kw)`` dequantized, each BatchNorm
        set to ``x + b`` with ``b`` the conv's folded bias ``(C_out,)``, classifier weight
        ``(1000, 1280)`` and bias ``(1000,)``.

    Raises:
        BALFError: a packed conv names no conv of ``model``, shapes differ, or a conv is missing.
    """
    pairs = _conv_bn_pairs(model)
    reference = model.state_dict()
    state: dict[str, Tensor] = {}
    for attribute, conv in _HOISTED.findall(traced.code):
        if conv not in pairs:
            raise BALFError(f"mobilenet_v2_q8: packed weights for {conv!r}, which is no conv here")
        weight, bias = torch.ops.quantized.conv2d_unpack(traced._c.getattr(attribute))
        bn = pairs[conv]
        state[f"{conv}.weight"] = weight.dequantize()
        channels = weight.shape[0]
        eps = model.get_submodule(bn).eps
        state[f"{bn}.weight"] = torch.ones(channels)
        state[f"{bn}.bias"] = bias.detach().float() if bias is not None else torch.zeros(channels)
        state[f"{bn}.running_mean"] = torch.zeros(channels)
        state[f"{bn}.running_var"] = torch.full((channels,), 1.0 - eps)
        state[f"{bn}.num_batches_tracked"] = torch.tensor(0)
    linear = traced.classifier._c.getattr("1").getattr("_packed_params").getattr("_packed_params")
    weight, bias = torch.ops.quantized.linear_unpack(linear)
    state["classifier.1.weight"] = weight.dequantize()
    state["classifier.1.bias"] = bias.detach().float()
    missing = sorted(set(reference) - set(state))
    if missing:
        raise BALFError(f"mobilenet_v2_q8: the int8 file has no weights for {missing[:5]}")
    for key, value in state.items():
        if value.shape != reference[key].shape:
            raise BALFError(
                f"mobilenet_v2_q8: {key} has shape {tuple(value.shape)} in the int8 file, "
                f"{tuple(reference[key].shape)} in torchvision's mobilenet_v2"
            )
    return state


def check_against_traced(
    model: nn.Module, traced: torch.jit.ScriptModule, images: Tensor, min_cosine: float = MIN_COSINE
) -> float:
    """Smallest cosine similarity of ``model``'s and ``traced``'s logits over ``images``.

    Args:
        images: ``(B, 3, 224, 224)`` normalised inputs; the traced model runs one at a time.

    Raises:
        BALFError: the similarity is below ``min_cosine`` (the rebuild is not the int8 model).
    """
    model.eval()
    worst = 1.0
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = model(images)
        for i in range(images.shape[0]):
            theirs = traced(images[i : i + 1]).float()
            worst = min(worst, float(nn.functional.cosine_similarity(ours[i : i + 1], theirs)))
    if worst < min_cosine:
        raise BALFError(
            f"mobilenet_v2_q8: the float rebuild's logits differ from the int8 model's (cosine "
            f"similarity {worst:.3f} < {min_cosine}); the file is not the expected MobileNetV2"
        )
    return worst


def _check_images(count: int = 2, seed: int = 0) -> Tensor:
    """Standard normal inputs ``(count, 3, 224, 224)`` fixed by ``seed`` (on the shared file the
    two logits agree with cosine similarity 0.98; on real images 0.99)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, 224, 224, generator=generator)


def mobilenet_v2_q8(
    path: str | os.PathLike | None = None,
    *,
    pretrained: bool = True,
    num_classes: int = 1000,
    check: bool = True,
) -> nn.Module:
    """torchvision's MobileNetV2 with float weights dequantized from the int8 release.

    Args:
        path: the int8 TorchScript file (default: :func:`mobilenet_q8_path`).
        pretrained: ``False`` builds the same architecture with random weights (no file read).
        num_classes: classifier size (1000 when ``pretrained``).
        check: compare the rebuild's logits with the traced model's (2 inputs, batch 1).

    Returns:
        ``torchvision.models.mobilenet_v2`` in train mode; ``(B, 3, 224, 224) -> (B, 1000)``.

    Raises:
        WeightsNotFoundError: the file is missing.
        BALFError: the file is not the expected model (unloadable, shapes, outputs differ).

    Example:
        >>> model = mobilenet_v2_q8("mobilenet_quantized.pt").eval()
        >>> model(torch.randn(1, 3, 224, 224)).shape
        torch.Size([1, 1000])
    """
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
    if not pretrained:
        return model
    if num_classes != 1000:
        raise BALFError(f"pretrained mobilenet_v2_q8 has 1000 classes, got {num_classes}")
    file = mobilenet_q8_path(path)
    traced = _load_traced(file)
    model.load_state_dict(dequantized_state_dict(traced, model), strict=True)
    if check:
        cosine = check_against_traced(model, traced, _check_images())
        logger.info(
            "mobilenet_v2_q8 from %s: logits match the int8 model (cosine %.4f)", file, cosine
        )
    return model.train()
