"""Merge ("fold") clustered channels and rebuild genuinely smaller modules.

With ``U ∈ {0,1}^{n×k}`` the cluster assignment of a group, producer-side tensors (conv output
rows, conv biases, BN ``γ``, ``β``, running mean and variance) become cluster **means**
``(UᵀU)⁻¹ Uᵀ W`` and consumer-side input slices become cluster **sums** ``W U`` (a merged channel
stands for all its members). Every touched module is replaced by a new ``nn.Conv2d``,
``nn.BatchNorm2d`` or ``nn.Linear`` of the reduced size, so the folded model's ``state_dict``,
``count_params`` and ``count_flops`` are those of the smaller network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init

from balf.errors import BALFError
from balf_paper.folding.groups import ChannelGroup

__all__ = ["assignment_matrix", "merge_channels_", "mean_matrix"]

_CHANNEL_TENSORS = ("weight", "bias", "running_mean", "running_var")


def assignment_matrix(labels: Tensor, k: int, dtype: torch.dtype | None = None) -> Tensor:
    """``U`` ``(n, k)`` with ``U[i, c] = 1`` iff channel ``i`` is in cluster ``c``.

    Raises:
        BALFError: a label is outside ``[0, k)`` or a cluster is empty.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.ndim != 1 or labels.numel() == 0 or labels.min() < 0 or labels.max() >= k:
        raise BALFError(f"cluster labels must be a non-empty (n,) vector in [0, {k})")
    u = torch.nn.functional.one_hot(labels, k).to(dtype or torch.get_default_dtype())
    if bool((u.sum(0) == 0).any()):
        raise BALFError(f"every one of the {k} clusters needs at least one channel")
    return u


def mean_matrix(u: Tensor) -> Tensor:
    """``(UᵀU)⁻¹ Uᵀ`` ``(k, n)``: row ``c`` averages the members of cluster ``c``."""
    return u.T / u.sum(0)[:, None]


def _merge_producer(t: Tensor, u: Tensor) -> Tensor:
    """``(n, ...)`` -> ``(k, ...)`` cluster means along the first axis."""
    m = mean_matrix(u.to(t.dtype))
    return (m @ t.reshape(t.shape[0], -1)).reshape(u.shape[1], *t.shape[1:])


def _merge_consumer(w: Tensor, u: Tensor) -> Tensor:
    """``(out, n, ...)`` -> ``(out, k, ...)`` cluster sums along the second axis."""
    moved = w.movedim(1, -1)
    return (moved @ u.to(w.dtype)).movedim(-1, 1)


def _tensors(module: nn.Module) -> dict[str, Tensor]:
    return {
        name: t.detach().clone()
        for name in _CHANNEL_TENSORS
        if isinstance(t := getattr(module, name, None), Tensor)
    }


def _new_conv(old: nn.Conv2d, t: Mapping[str, Tensor]) -> nn.Conv2d:
    w = t["weight"]
    conv = skip_init(
        nn.Conv2d,
        w.shape[1] * old.groups,
        w.shape[0],
        old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=old.groups,
        bias="bias" in t,
        padding_mode=old.padding_mode,
        device=w.device,
        dtype=w.dtype,
    )
    return conv


def _new_bn(old: nn.BatchNorm2d, t: Mapping[str, Tensor]) -> nn.BatchNorm2d:
    n = next(iter(t.values())).shape[0] if t else old.num_features
    ref = old.weight if old.affine else old.running_mean
    bn = skip_init(
        type(old),
        n,
        eps=old.eps,
        momentum=old.momentum,
        affine=old.affine,
        track_running_stats=old.track_running_stats,
        device=None if ref is None else ref.device,
        dtype=None if ref is None else ref.dtype,
    )
    if old.num_batches_tracked is not None:
        bn.num_batches_tracked = old.num_batches_tracked.clone()
    return bn


def _new_linear(old: nn.Linear, t: Mapping[str, Tensor]) -> nn.Linear:
    w = t["weight"]
    return skip_init(
        nn.Linear, w.shape[1], w.shape[0], bias="bias" in t, device=w.device, dtype=w.dtype
    )


def _rebuild(old: nn.Module, t: Mapping[str, Tensor]) -> nn.Module:
    """A module like ``old`` whose per-channel tensors are ``t`` (shapes may be smaller)."""
    if isinstance(old, nn.Conv2d):
        new = _new_conv(old, t)
    elif isinstance(old, nn.BatchNorm2d):
        new = _new_bn(old, t)
    elif isinstance(old, nn.Linear):
        new = _new_linear(old, t)
    else:  # groups only hold these types (checked by channel_groups)
        raise BALFError(f"cannot rebuild a {type(old).__name__}")
    with torch.no_grad():
        for name, value in t.items():
            getattr(new, name).copy_(value)
    new.train(old.training)
    return new


def merge_channels_(
    model: nn.Module, groups: Sequence[ChannelGroup], labels: Mapping[str, Tensor]
) -> nn.Module:
    """Fold ``model`` **in place**: merge every group's clusters and swap in smaller modules.

    Args:
        model: the network (modified and returned).
        groups: its channel groups (:func:`balf_paper.folding.channel_groups`).
        labels: cluster label ``(n,)`` per channel, by group name, with labels ``0..k-1`` all
            used; groups without an entry are left unchanged.

    Returns:
        ``model``, with producer convs of ``out_channels = k``, BNs of ``num_features = k`` and
        consumers of ``in_channels``/``in_features = k`` for every merged group.
    """
    state: dict[str, dict[str, Tensor]] = {}

    def tensors(name: str) -> dict[str, Tensor]:
        if name not in state:
            state[name] = _tensors(model.get_submodule(name))
        return state[name]

    known = {g.name for g in groups}
    unknown = set(labels) - known
    if unknown:
        raise BALFError(f"labels for unknown channel groups {sorted(unknown)}")
    with torch.no_grad():
        for group in groups:
            if group.name not in labels:
                continue
            lab = torch.as_tensor(labels[group.name], dtype=torch.long)
            if lab.shape != (group.size,):
                raise BALFError(f"{group.name}: {group.size} labels needed, got {tuple(lab.shape)}")
            u = assignment_matrix(lab, int(lab.max()) + 1)
            for p in group.producers:
                for name in (p.conv, p.bn):  # every per-channel tensor is indexed on axis 0
                    t = tensors(name)
                    for key in list(t):
                        t[key] = _merge_producer(t[key], u.to(t[key].device))
            for name in group.consumers:
                t = tensors(name)
                t["weight"] = _merge_consumer(t["weight"], u.to(t["weight"].device))
        for name, t in state.items():
            parent, _, child = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            setattr(owner, child, _rebuild(model.get_submodule(name), t))
    return model
