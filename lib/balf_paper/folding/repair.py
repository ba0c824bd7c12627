"""Variance repair after folding: AR (data-free) and R (BN statistics from data).

Averaging correlated channels shrinks the activation variance of the merged channel.

- **AR** first folds every producer BN's normalisation into its conv,
  ``W ← W/√(σ²+ε)``, ``b ← (b−μ)/√(σ²+ε)`` (:func:`fold_batchnorm_normalisation`), so each
  channel's pre-``γ`` activation has unit variance. After merging, a cluster ``c`` of ``N_c``
  channels whose normalised rows have mean pairwise cosine similarity ``E_c`` has variance
  ``(1 + (N_c−1)·E_c) / N_c``, which ``γ_c ← mean(γ)·√(N_c / (1 + (N_c−1)·E_c))`` undoes
  (:func:`ar_gamma_scales`); singletons keep their ``γ`` and ``β`` is averaged.
- **R** resets the BN running statistics of the folded model and re-estimates them with forward
  passes over training images in train mode, momentum ``None`` (cumulative average)
  (:func:`recompute_batchnorm_statistics`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from balf.calibration.distributed import rank_and_world
from balf.errors import BALFError
from balf_paper.folding.groups import ChannelGroup

__all__ = [
    "ar_gamma_scales",
    "ar_scale",
    "fold_batchnorm_normalisation_",
    "recompute_batchnorm_statistics_",
    "rescale_gammas_",
]

_MIN_VARIANCE = 1e-12
"""Floor of ``(1 + (N−1)·E) / N`` (zero only when the unit rows sum to zero)."""


def fold_batchnorm_normalisation_(model: nn.Module, groups: Sequence[ChannelGroup]) -> None:
    """Fold every producer BN's normalisation into its conv, **in place**; outputs unchanged.

    With ``s = √(σ² + ε)``: ``W ← W / s`` and the folded bias ``(b − μ) / s``. The BN keeps
    ``γ``, ``β`` and gets running variance ``1 − ε`` (so it divides by exactly 1). A conv bias,
    if present, holds the folded bias and the running mean becomes 0; a conv without bias gets
    none — the running mean holds the negated folded bias ``μ / s`` instead, so no parameter
    is added and the BN computes ``γ·(W x / s − μ / s) + β`` as before.
    """
    with torch.no_grad():
        for group in groups:
            for p in group.producers:
                conv, bn = model.get_submodule(p.conv), model.get_submodule(p.bn)
                if bn.running_mean is None or bn.running_var is None:
                    raise BALFError(f"{p.bn} tracks no running statistics; AR needs them")
                s = torch.sqrt(bn.running_var + bn.eps)
                shape = (-1,) + (1,) * (conv.weight.ndim - 1)
                conv.weight.div_(s.view(shape).to(conv.weight.dtype))
                if conv.bias is not None:
                    conv.bias.sub_(bn.running_mean).div_(s)
                    bn.running_mean.zero_()
                else:
                    bn.running_mean.div_(s)
                bn.running_var.fill_(1.0 - bn.eps)


def ar_scale(rows: Tensor) -> float:
    """AR's factor ``√(N / (1 + (N−1)·E))`` for a cluster of ``N`` producer rows ``(N, d)``.

    ``E`` is the mean pairwise cosine similarity of the rows (zero rows count as orthogonal);
    a singleton gives 1.

    Example:
        >>> ar_scale(torch.eye(4))  # orthogonal rows: variance 1/N, factor √N
        2.0
    """
    n = rows.shape[0]
    if n <= 1:
        return 1.0
    unit = torch.nn.functional.normalize(rows.reshape(n, -1).double(), dim=1)
    gram = unit @ unit.T
    e = float((gram.sum() - gram.diagonal().sum()) / (n * (n - 1)))
    variance = max((1.0 + (n - 1) * e) / n, _MIN_VARIANCE)
    return variance**-0.5


def ar_gamma_scales(
    model: nn.Module, groups: Sequence[ChannelGroup], labels: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """AR's ``γ`` factor per cluster for every producer BN, from the rows **before** merging.

    Args:
        model: the BN-normalised network (see :func:`fold_batchnorm_normalisation_`).
        groups: its channel groups.
        labels: cluster label ``(n,)`` per channel, by group name (missing: no merge).

    Returns:
        ``{bn name: (k,) factors}`` for the BNs of merged groups (1 for singletons).
    """
    scales: dict[str, Tensor] = {}
    for group in groups:
        if group.name not in labels:
            continue
        lab = torch.as_tensor(labels[group.name], dtype=torch.long).cpu()
        k = int(lab.max()) + 1
        for p in group.producers:
            rows = model.get_submodule(p.conv).weight.detach().reshape(group.size, -1)
            factors = torch.ones(k, dtype=torch.float64)
            for c in range(k):
                members = torch.nonzero(lab == c).flatten()
                factors[c] = ar_scale(rows[members.to(rows.device)])
            scales[p.bn] = factors
    return scales


def rescale_gammas_(model: nn.Module, scales: Mapping[str, Tensor]) -> None:
    """Multiply each merged BN's ``γ`` ``(k,)`` by its factors ``(k,)``, **in place**."""
    with torch.no_grad():
        for name, factors in scales.items():
            bn = model.get_submodule(name)
            if not bn.affine:
                raise BALFError(f"{name} has no γ to rescale (affine=False)")
            bn.weight.mul_(factors.to(bn.weight.device, bn.weight.dtype))


def _images(batch: object) -> Tensor:
    """The input tensor of a batch: the batch itself or the first item of ``(images, ...)``."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise BALFError(f"data batches must be tensors or (images, labels), got {type(batch).__name__}")


def recompute_batchnorm_statistics_(model: nn.Module, data: Iterable) -> int:
    """Reset every BN's running statistics and re-estimate them from ``data``, **in place**.

    BNs run in train mode with ``momentum=None`` (a cumulative average over batches), the rest
    of the network in eval mode, without gradients. Under ``torch.distributed`` the statistics
    of all processes are averaged. Momenta and train/eval modes are restored afterwards.

    Args:
        model: the folded network.
        data: batches of images ``(B, C, H, W)`` or ``(images, labels)`` pairs.

    Returns:
        The number of batches seen.

    Raises:
        BALFError: ``data`` yields no batch.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    batches = 0
    try:
        with torch.no_grad():
            for batch in data:
                model(_images(batch).to(device))
                batches += 1
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        model.train(was_training)
    if batches == 0:
        raise BALFError("repair 'r' got no data batches to re-estimate the BN statistics")
    _, world = rank_and_world()
    if world > 1:
        with torch.no_grad():
            for bn in bns:
                for stat in (bn.running_mean, bn.running_var):
                    dist.all_reduce(stat)
                    stat.div_(world)
    return batches
