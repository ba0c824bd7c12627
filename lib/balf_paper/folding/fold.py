"""``fold_model``: Model Folding (Wang et al., ICLR 2025) of a ResNet, without fine-tuning.

Channels of every group (:mod:`.groups`) are clustered with Hartigan's k-means on their weights
(:mod:`.kmeans`, :mod:`.features`), each cluster is merged into one channel (:mod:`.merge`) and
the activation variance is optionally repaired (:mod:`.repair`).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from balf.errors import BALFError
from balf_paper.folding.features import channel_features, cluster_count
from balf_paper.folding.groups import channel_groups
from balf_paper.folding.kmeans import hartigan_kmeans
from balf_paper.folding.merge import merge_channels_
from balf_paper.folding.repair import (
    ar_gamma_scales,
    fold_batchnorm_normalisation_,
    recompute_batchnorm_statistics_,
    rescale_gammas_,
)

__all__ = ["REPAIRS", "fold_model", "fold_with_labels", "kept_channels"]

log = logging.getLogger(__name__)

REPAIRS: tuple[str, ...] = ("ar", "r", "none")
"""Variance repairs: data-free AR, BN re-estimation R (needs data), or none."""


def _check_repair(repair: str, data: Iterable | None) -> None:
    if repair not in REPAIRS:
        raise BALFError(f"repair must be one of {REPAIRS}, got {repair!r}")
    if repair == "r" and data is None:
        raise BALFError(
            "repair 'r' re-estimates BN statistics from training images: pass data=<batches>, "
            "or use the data-free repair='ar'"
        )


def kept_channels(model: nn.Module, keep: float) -> dict[str, int]:
    """Channels each group keeps at ``keep``: ``{group name: max(1, int(n · keep))}``."""
    return {g.name: cluster_count(g.size, keep) for g in channel_groups(model)}


def _apply(
    work: nn.Module,
    labels: Mapping[str, Tensor],
    repair: str,
    data: Iterable | None,
) -> nn.Module:
    """Merge ``work`` in place with ``labels`` and repair it.

    AR folds the BN normalisation into the convs first and reads the normalised rows of each
    cluster (for ``E_c``) before merging.
    """
    groups = channel_groups(work)
    if repair == "ar":
        fold_batchnorm_normalisation_(work, groups)
    scales = ar_gamma_scales(work, groups, labels) if repair == "ar" else {}
    merge_channels_(work, groups, labels)
    rescale_gammas_(work, scales)
    if repair == "r":
        assert data is not None
        recompute_batchnorm_statistics_(work, data)
    return work


def fold_with_labels(
    model: nn.Module,
    labels: Mapping[str, Tensor | np.ndarray],
    repair: str = "none",
    data: Iterable | None = None,
) -> nn.Module:
    """Fold ``model`` with given clusters instead of k-means (``model`` is not modified).

    Args:
        model: a supported ResNet (see :func:`balf_paper.folding.channel_groups`).
        labels: cluster label ``(n,)`` per channel by group name, labels ``0..k-1`` all used;
            groups without an entry are not merged.
        repair: ``"none"``, ``"ar"`` or ``"r"`` (as in :func:`fold_model`).
        data: batches for ``repair="r"``.

    Returns:
        The folded copy.
    """
    _check_repair(repair, data)
    work = copy.deepcopy(model)
    labels = {name: torch.as_tensor(lab, dtype=torch.long) for name, lab in labels.items()}
    return _apply(work, labels, repair, data)


def fold_model(
    model: nn.Module,
    keep: float,
    repair: str = "ar",
    data: Iterable | None = None,
    seed: int = 0,
) -> nn.Module:
    """Model Folding: merge similar channels so every group keeps ``int(n · keep)`` of ``n``.

    Args:
        model: a :class:`balf_paper.models.CifarResNet` or :class:`torchvision.models.ResNet`
            (not modified).
        keep: fraction of channels kept per group, in ``(0, 1]``; parameters kept ≈ ``keep²``.
        repair: ``"ar"`` (data-free variance repair, default), ``"r"`` (BN statistics
            re-estimated on ``data``) or ``"none"``.
        data: training batches (images ``(B, C, H, W)`` or ``(images, labels)``), used only by
            ``repair="r"``; ``"ar"`` and ``"none"`` never touch it.
        seed: seed of the k-means initial partitions (same seed, same result).

    Returns:
        A folded deep copy of ``model`` (same class, smaller ``nn.Conv2d``/``nn.BatchNorm2d``/
        ``nn.Linear`` modules), on the same device, in the same train/eval mode.

    Raises:
        BALFError: unsupported architecture, ``keep`` outside ``(0, 1]``, unknown ``repair``,
            or ``repair="r"`` without data.

    Example:
        >>> small = balf_paper.folding.fold_model(model, keep=0.7, repair="ar")
        >>> balf.count_params(small) / balf.count_params(model)  # about 0.7² = 0.49
    """
    _check_repair(repair, data)
    groups = channel_groups(model)  # unsupported models fail before any work
    for g in groups:
        cluster_count(g.size, keep)  # validates keep
    start = time.perf_counter()
    # The clusters come from the original weights, so the repairs differ only in how they
    # restore the variance of the same merged channels.
    rng = np.random.default_rng(seed)
    labels: dict[str, Tensor] = {}
    with torch.no_grad():
        for group in groups:
            k = cluster_count(group.size, keep)
            if k >= group.size:
                continue
            result = hartigan_kmeans(channel_features(model, group).numpy(), k, seed=rng)
            labels[group.name] = torch.from_numpy(result.labels)
            log.debug(
                "%s: %d -> %d channels, inertia %.4g", group.name, group.size, k, result.inertia
            )
    work = _apply(copy.deepcopy(model), labels, repair, data)
    log.info(
        "folded %d of %d channel groups at keep=%g (repair %s) in %.2fs",
        len(labels),
        len(groups),
        keep,
        repair,
        time.perf_counter() - start,
    )
    return work
