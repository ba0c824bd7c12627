"""Per-channel feature vectors that Model Folding clusters, and the number of clusters.

A channel of a group is described by everything that reads or writes it: each producer's conv
row (flattened), its bias, its BN ``γ`` and ``β``, and each consumer's input slice (a conv's
``weight[:, i]`` flattened, a classifier column), concatenated.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from balf.errors import BALFError
from balf_paper.folding.groups import ChannelGroup

__all__ = ["channel_features", "cluster_count"]


def cluster_count(n: int, keep: float) -> int:
    """Clusters of a group of ``n`` channels: ``max(1, int(n · keep))`` (the paper's rule)."""
    if isinstance(keep, bool) or not isinstance(keep, (int, float)):
        raise BALFError(f"keep must be a number in (0, 1], got {keep!r}")
    if not (math.isfinite(keep) and 0 < keep <= 1):
        raise BALFError(f"keep must be in (0, 1], got {keep}")
    return max(1, int(n * keep))


def channel_features(model: nn.Module, group: ChannelGroup) -> Tensor:
    """One feature vector per channel of ``group``.

    Args:
        model: the network holding the group's modules.
        group: the channels, see :func:`balf_paper.folding.channel_groups`.

    Returns:
        ``(n, d)`` float64 on the CPU: for every producer its rows ``(C_in·kh·kw)``, conv
        bias (if any), ``γ`` and ``β``, then ``weight[:, i]`` flattened for every consumer.
    """
    parts: list[Tensor] = []
    for p in group.producers:
        conv, bn = model.get_submodule(p.conv), model.get_submodule(p.bn)
        parts.append(conv.weight.detach().reshape(group.size, -1))
        if conv.bias is not None:
            parts.append(conv.bias.detach()[:, None])
        if bn.affine:
            parts += [bn.weight.detach()[:, None], bn.bias.detach()[:, None]]
    for name in group.consumers:
        weight = model.get_submodule(name).weight.detach()
        parts.append(weight.transpose(0, 1).reshape(group.size, -1))
    return torch.cat([t.to("cpu", torch.float64) for t in parts], dim=1)
