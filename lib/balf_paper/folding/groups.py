"""Channel groups of a residual network: every (module, axis) that indexes the same channels.

Folding merges channels, so each set of tensors that share a channel index must be merged with
one clustering. For a ResNet the groups follow from the module tree:

- one **residual stream** per run of blocks between projection shortcuts. Producers write into
  it (the stem conv+BN, each block's last conv+BN, the projection shortcut conv+BN); consumers
  read it (each block's first conv, the next projection shortcut conv, the classifier columns).
- one **inner group** per pair of consecutive convs inside a block: the first conv's output
  channels and its BN, and the next conv's input channels (BasicBlock: one, Bottleneck: two).

The network's input channels and the classifier's outputs are never in a group. Supported:
:class:`balf_paper.models.CifarResNet` and :class:`torchvision.models.ResNet` with BasicBlock or
Bottleneck blocks (``groups=1`` convolutions, BatchNorm2d, Linear classifier).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from balf.errors import BALFError
from balf_paper.models.cifar_resnet import BasicBlock as CifarBasicBlock
from balf_paper.models.cifar_resnet import CifarResNet

__all__ = ["SUPPORTED_MODELS", "ChannelGroup", "Producer", "channel_groups"]

SUPPORTED_MODELS: tuple[str, ...] = (
    "balf_paper.models.CifarResNet",
    "torchvision.models.ResNet (BasicBlock/Bottleneck, groups=1)",
)
"""Architectures :func:`channel_groups` understands, for error messages."""


@dataclass(frozen=True)
class Producer:
    """A conv whose output channels (rows of ``weight`` ``(C_out, C_in, kh, kw)``) belong to a
    group, and the BatchNorm2d that normalises them (``num_features = C_out``)."""

    conv: str
    bn: str


@dataclass(frozen=True)
class ChannelGroup:
    """``size`` channels shared by ``producers`` (output axis) and ``consumers`` (input axis).

    Attributes:
        name: readable id, e.g. ``"stream:conv1"`` or ``"inner:layer1.0.conv1"``.
        size: number of channels ``n``.
        producers: convs (+BN) writing the channels.
        consumers: Conv2d/Linear module names reading them (``weight[:, i]`` is channel ``i``).
    """

    name: str
    size: int
    producers: tuple[Producer, ...]
    consumers: tuple[str, ...]


@dataclass(frozen=True)
class _Block:
    """A residual block: convs in order (first reads the stream, last writes to it) and its
    projection shortcut (``None`` for an identity shortcut)."""

    chain: tuple[Producer, ...]
    shortcut: Producer | None


@dataclass
class _Stream:
    producers: list[Producer] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)


def _unsupported(model: nn.Module, why: str = "") -> BALFError:
    reason = f" ({why})" if why else ""
    return BALFError(
        f"Model Folding does not support {type(model).__module__}.{type(model).__name__}"
        f"{reason}; supported: {', '.join(SUPPORTED_MODELS)}"
    )


def _projection(module: nn.Module | None, prefix: str, model: nn.Module) -> Producer | None:
    """The ``Sequential(Conv2d, BatchNorm2d)`` shortcut at ``prefix``, or ``None`` if identity."""
    if module is None or isinstance(module, nn.Identity):
        return None
    if (
        isinstance(module, nn.Sequential)
        and len(module) == 2
        and isinstance(module[0], nn.Conv2d)
        and isinstance(module[1], nn.BatchNorm2d)
    ):
        return Producer(f"{prefix}.0", f"{prefix}.1")
    raise _unsupported(model, f"shortcut {prefix} is not Sequential(Conv2d, BatchNorm2d)")


def _cifar_layout(model: CifarResNet) -> tuple[Producer, list[_Block], str]:
    blocks = []
    for stage in ("layer1", "layer2", "layer3"):
        for i, block in enumerate(getattr(model, stage)):
            if not isinstance(block, CifarBasicBlock):
                raise _unsupported(model, f"{stage}.{i} is {type(block).__name__}")
            p = f"{stage}.{i}"
            chain = (Producer(f"{p}.conv1", f"{p}.bn1"), Producer(f"{p}.conv2", f"{p}.bn2"))
            blocks.append(_Block(chain, _projection(block.shortcut, f"{p}.shortcut", model)))
    return Producer("conv1", "bn1"), blocks, "fc"


def _torchvision_layout(model: nn.Module) -> tuple[Producer, list[_Block], str]:
    from torchvision.models import resnet as tv_resnet

    blocks = []
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for i, block in enumerate(getattr(model, stage)):
            p = f"{stage}.{i}"
            if isinstance(block, tv_resnet.Bottleneck):
                depth = 3
            elif isinstance(block, tv_resnet.BasicBlock):
                depth = 2
            else:
                raise _unsupported(model, f"{p} is {type(block).__name__}")
            chain = tuple(Producer(f"{p}.conv{j}", f"{p}.bn{j}") for j in range(1, depth + 1))
            blocks.append(_Block(chain, _projection(block.downsample, f"{p}.downsample", model)))
    return Producer("conv1", "bn1"), blocks, "fc"


def _layout(model: nn.Module) -> tuple[Producer, list[_Block], str]:
    """Stem, blocks in forward order and classifier name of a supported ResNet."""
    from torchvision.models import resnet as tv_resnet  # imported on use (start-up time)

    if isinstance(model, CifarResNet):
        return _cifar_layout(model)
    if isinstance(model, tv_resnet.ResNet):
        return _torchvision_layout(model)
    raise _unsupported(model)


def _check(model: nn.Module, group: ChannelGroup) -> None:
    """Module types, ``groups == 1`` and channel counts agree with ``group.size``."""
    for p in group.producers:
        conv, bn = model.get_submodule(p.conv), model.get_submodule(p.bn)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            raise _unsupported(model, f"{p.conv}/{p.bn} are not Conv2d/BatchNorm2d")
        if conv.groups != 1:
            raise _unsupported(model, f"{p.conv} is a grouped convolution")
        if conv.out_channels != group.size or bn.num_features != group.size:
            raise _unsupported(
                model, f"{p.conv} has {conv.out_channels} channels, not {group.size}"
            )
    for name in group.consumers:
        m = model.get_submodule(name)
        if isinstance(m, nn.Conv2d) and m.groups == 1:
            n = m.in_channels
        elif isinstance(m, nn.Linear):
            n = m.in_features
        else:
            raise _unsupported(model, f"consumer {name} is {type(m).__name__}, grouped or unknown")
        if n != group.size:
            raise _unsupported(model, f"{name} reads {n} channels, not {group.size}")


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """The channel groups of ``model``: inner groups, then residual streams, each in forward order.

    Args:
        model: a :class:`balf_paper.models.CifarResNet` or :class:`torchvision.models.ResNet`.

    Returns:
        One :class:`ChannelGroup` per stream and per consecutive conv pair inside a block. Every
        Conv2d output channel and BatchNorm2d feature of the network is in exactly one group.

    Raises:
        BALFError: the architecture is not supported (the message names the model type and the
            supported ones).

    Example:
        >>> [g.name for g in channel_groups(resnet20())][:2]
        ['inner:layer1.0.conv1', 'inner:layer1.1.conv1']
    """
    stem, blocks, classifier = _layout(model)
    inner: list[ChannelGroup] = []
    streams: list[_Stream] = [_Stream(producers=[stem])]
    for block in blocks:
        stream = streams[-1]
        stream.consumers.append(block.chain[0].conv)
        if block.shortcut is not None:  # the projection ends the stream and starts the next
            stream.consumers.append(block.shortcut.conv)
            streams.append(_Stream(producers=[block.shortcut]))
        for producer, reader in zip(block.chain[:-1], block.chain[1:], strict=True):
            size = model.get_submodule(producer.conv).out_channels
            inner.append(ChannelGroup(f"inner:{producer.conv}", size, (producer,), (reader.conv,)))
        streams[-1].producers.append(block.chain[-1])
    streams[-1].consumers.append(classifier)
    if not isinstance(model.get_submodule(classifier), nn.Linear):
        raise _unsupported(model, f"classifier {classifier} is not nn.Linear")
    groups = inner + [
        ChannelGroup(
            f"stream:{s.producers[0].conv}",
            model.get_submodule(s.producers[0].conv).out_channels,
            tuple(s.producers),
            tuple(s.consumers),
        )
        for s in streams
    ]
    for group in groups:
        _check(model, group)
    return groups
