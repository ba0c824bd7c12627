"""How images become a model's input: the evaluation preprocessing a model declares.

A model declares its :class:`Preprocessing` (as timm's ``pretrained_cfg``: normalisation, and
for ImageNet-size models the resize, centre crop and interpolation); a dataset's loaders take one
and build their transform from it. Datasets never ask which model runs on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported on use: scripts' --help stays fast
    from torchvision import transforms as T


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Evaluation preprocessing: optionally resize the short side and centre crop, normalise.

    Attributes:
        mean: per-channel mean of the normalisation of ``[0, 1]`` images.
        std: per-channel standard deviation of the normalisation.
        resize: short-side size after resizing (e.g. 256); ``None``: keep the size.
        crop: side of the square centre crop (e.g. 224); ``None``: no crop.
        interpolation: ``"bilinear"`` or ``"bicubic"`` (for ``resize``).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None
    crop: int | None = None
    interpolation: str = "bilinear"

    def transform(self) -> T.Compose:
        """PIL image -> normalised float tensor ``(C, crop, crop)`` (or the image's size)."""
        from torchvision import transforms as T  # imported on use: scripts' --help stays fast

        steps = []
        if self.resize is not None:
            mode = T.InterpolationMode(self.interpolation)
            steps.append(T.Resize(self.resize, interpolation=mode))
        if self.crop is not None:
            steps.append(T.CenterCrop(self.crop))
        return T.Compose([*steps, T.ToTensor(), T.Normalize(self.mean, self.std)])
