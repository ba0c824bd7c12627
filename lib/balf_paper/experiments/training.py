"""Training a small-image model from scratch on in-memory uint8 tensors (CPU-friendly).

Augmentation (random crop with zero padding + horizontal flip) and normalisation run on whole
uint8 batches (no PIL, no DataLoader workers), which is what makes CPU training practical. The
datasets come from :mod:`balf_paper.data.registry` (``DatasetInfo.tensors`` gives the splits,
``crop_padding``, ``mean`` and ``std`` the preprocessing). ``scripts/cifar10/pretrain_resnet.py``
is the command line around these functions (run directory, resuming, checkpoints).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from balf_paper.data.registry import DatasetInfo

__all__ = ["augment", "evaluate_tensors", "lr_factor", "normalise", "train_one_epoch"]


def augment(images: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """Random crop with zero padding ``pad`` and random horizontal flip, batched.

    Args:
        images: uint8 ``(B, C, H, W)``.
        pad: padding on each side; crops of size ``(H, W)`` are taken from the padded image.
        generator: source of randomness (CPU).

    Returns:
        uint8 ``(B, C, H, W)``.
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
    cols = torch.arange(w).expand(b, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + ox[:, None]
    cols = cols[:, None, None, :]  # (B, 1, 1, W)
    return padded[
        torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols
    ]


def normalise(
    images: Tensor, info: DatasetInfo, device: torch.device, channels_last: bool = False
) -> Tensor:
    """uint8 ``(B, C, H, W)`` -> float32 ``(B, C, H, W)`` on ``device``, normalised by ``info``."""
    x = images.to(device, non_blocking=True).float().div_(255.0)
    mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=device).view(1, -1, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def lr_factor(
    epoch: int, schedule: str, epochs: int, milestones: Sequence[int] = (), gamma: float = 0.1
) -> float:
    """Multiplier of the initial lr during (0-based) ``epoch``: ``"cosine"`` over ``epochs``,
    or ``"step"``: ``gamma`` per milestone reached."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    return gamma ** sum(epoch >= m for m in milestones)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: tuple[Tensor, Tensor],
    info: DatasetInfo,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    channels_last: bool = False,
) -> tuple[float, float]:
    """One pass over the shuffled, augmented training set; returns (mean loss, accuracy).

    Args:
        data: uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)``.
    """
    images, labels = data
    model.train()
    order = torch.randperm(len(labels), generator=generator)
    total_loss, correct = 0.0, 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        crops = augment(images[idx], info.crop_padding, generator)
        x = normalise(crops, info, device, channels_last)
        y = labels[idx].to(device)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(idx)
        correct += (logits.argmax(1) == y).sum().item()
    return total_loss / len(labels), correct / len(labels)


@torch.no_grad()
def evaluate_tensors(
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    info: DatasetInfo,
    batch_size: int,
    device: torch.device,
    channels_last: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on uint8 images ``(N, C, H, W)`` and labels ``(N,)``."""
    images, labels = data
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        x = normalise(images[start : start + batch_size], info, device, channels_last)
        y = labels[start : start + batch_size].to(device)
        logits = model(x)
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    return total_loss / len(labels), correct / len(labels)
