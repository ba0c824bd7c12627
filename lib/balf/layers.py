"""Factorized layers made only of standard torch modules (method §3).

``state_dict``, ``torch.export`` and ONNX export work on them as on any ``nn.Sequential`` of
``nn.Linear``/``nn.Conv1d``/``nn.Conv2d``. Each is built from the dense layer and its factors by a
classmethod: :meth:`LowRankLinear.from_linear`, :meth:`LowRankConv2d.from_conv`,
:meth:`LowRankConv1d.from_conv`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["LowRankConv1d", "LowRankConv2d", "LowRankLinear"]


def _plain(value: Any) -> Any:
    """Tuples as lists (what JSON gives back), everything else unchanged."""
    return list(value) if isinstance(value, tuple) else value


class LowRankLinear(nn.Module):
    """``x → Linear(in, r, bias=False) → Linear(r, out, bias)``.

    Attributes:
        in_features, out_features, rank: the shape of the factorization.
        first: ``nn.Linear(in_features, rank, bias=False)`` holding ``Aᵀ`` (rank, in).
        second: ``nn.Linear(rank, out_features)`` holding ``Bᵀ`` (out, rank) and the bias.

    Shape:
        input ``(*, in_features)`` → output ``(*, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.first = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.second = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    @classmethod
    def from_factors(cls, a: Tensor, b: Tensor, bias: Tensor | None = None) -> LowRankLinear:
        """Build from ``A`` ``(in, r)`` and ``B`` ``(r, out)`` (so ``y = x A B + bias``).

        The layer takes the dtype/device of ``bias`` if given, else of ``a``.
        """
        ref = bias if bias is not None else a
        # built on the meta device: no random initialisation of weights about to be overwritten
        layer = cls(a.shape[0], b.shape[1], a.shape[1], bias is not None, "meta", ref.dtype)
        layer = layer.to_empty(device=ref.device)
        with torch.no_grad():
            layer.first.weight.copy_(a.t())
            layer.second.weight.copy_(b.t())
            if bias is not None:
                layer.second.bias.copy_(bias)
        return layer

    @classmethod
    def from_linear(cls, linear: nn.Linear, a: Tensor, b: Tensor) -> LowRankLinear:
        """Replace ``linear`` by factors ``A`` ``(in, r)`` and ``B`` ``(r, out)``, keeping its bias.

        The factors are cast to the dense layer's dtype and device.

        Example:
            >>> small = LowRankLinear.from_linear(nn.Linear(64, 32), a, b)  # a (64, 8), b (8, 32)
        """
        w = linear.weight
        a, b = a.to(device=w.device, dtype=w.dtype), b.to(device=w.device, dtype=w.dtype)
        bias = linear.bias.detach() if linear.bias is not None else None
        return cls.from_factors(a, b, bias).to(device=w.device, dtype=w.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.first(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"

    # -- save spec (balf.save / balf.load) ---------------------------------------------------

    kind: ClassVar[str] = "linear"
    dense_type: ClassVar[type[nn.Module]] = nn.Linear

    @staticmethod
    def dense_spec(dense: nn.Linear) -> dict[str, Any]:
        """The dense layer's hyper-parameters, JSON-serialisable."""
        return {
            "in_features": dense.in_features,
            "out_features": dense.out_features,
            "bias": dense.bias is not None,
        }

    def spec(self) -> dict[str, Any]:
        """``{"kind", "rank", "dense": hyper-parameters of the replaced nn.Linear}``."""
        return {
            "kind": self.kind,
            "rank": self.rank,
            "dense": {
                "in_features": self.in_features,
                "out_features": self.out_features,
                "bias": self.second.bias is not None,
            },
        }

    @classmethod
    def from_spec(
        cls,
        spec: dict[str, Any],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> LowRankLinear:
        """An uninitialised layer of the shape :meth:`spec` describes (weights loaded after)."""
        d = spec["dense"]
        return cls(
            d["in_features"], d["out_features"], spec["rank"], d["bias"], device=device, dtype=dtype
        )


class _LowRankConvNd(nn.Module):
    """A ``groups``-grouped conv to ``groups·rank`` channels, then a grouped 1-wide conv.

    The first conv keeps the original kernel size, stride, padding and dilation; the second
    (kernel 1, ``groups`` groups) maps ``groups·rank`` channels to ``out_channels`` and adds the
    bias. Subclasses fix the convolution type (:attr:`conv_type`) and the save-spec ``kind``.
    """

    conv_type: ClassVar[type[nn.Module]]
    kind: ClassVar[str]
    dense_type: ClassVar[type[nn.Module]]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        rank: int,
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] | str = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.rank = rank
        self.groups = groups
        kw = {"device": device, "dtype": dtype}
        self.first = self.conv_type(
            in_channels,
            groups * rank,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
            **kw,
        )
        self.second = self.conv_type(groups * rank, out_channels, 1, groups=groups, bias=bias, **kw)
        self.kernel_size = self.first.kernel_size
        self.stride = self.first.stride
        self.padding = self.first.padding
        self.dilation = self.first.dilation

    @classmethod
    def from_conv(cls, conv: nn.Module, a: Tensor, b: Tensor) -> _LowRankConvNd:
        """Replace ``conv`` by per-group factors ``A`` ``(G, D, r)``, ``B`` ``(G, r, K)``.

        ``D = C_in/G·prod(kernel)`` in ``(c, *kernel)`` order, ``K = C_out/G``. Keeps the conv's
        bias; the factors are cast to its dtype and device.
        """
        return _from_conv(cls, conv, a, b)

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.first(x))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"rank={self.rank}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}"
        )

    # -- save spec (balf.save / balf.load) ---------------------------------------------------

    @staticmethod
    def dense_spec(dense: nn.Module) -> dict[str, Any]:
        """The dense conv's hyper-parameters, JSON-serialisable."""
        return {
            "in_channels": dense.in_channels,
            "out_channels": dense.out_channels,
            "kernel_size": _plain(dense.kernel_size),
            "stride": _plain(dense.stride),
            "padding": _plain(dense.padding),
            "dilation": _plain(dense.dilation),
            "groups": dense.groups,
            "bias": dense.bias is not None,
        }

    def spec(self) -> dict[str, Any]:
        """``{"kind", "rank", "dense": hyper-parameters of the replaced conv}``."""
        return {
            "kind": self.kind,
            "rank": self.rank,
            "dense": {
                "in_channels": self.in_channels,
                "out_channels": self.out_channels,
                "kernel_size": _plain(self.kernel_size),
                "stride": _plain(self.stride),
                "padding": _plain(self.padding),
                "dilation": _plain(self.dilation),
                "groups": self.groups,
                "bias": self.second.bias is not None,
            },
        }

    @classmethod
    def from_spec(
        cls,
        spec: dict[str, Any],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> _LowRankConvNd:
        """An uninitialised layer of the shape :meth:`spec` describes (weights loaded after)."""
        d = spec["dense"]
        return cls(
            d["in_channels"],
            d["out_channels"],
            tuple(d["kernel_size"]),
            spec["rank"],
            stride=tuple(d["stride"]),
            padding=d["padding"] if isinstance(d["padding"], str) else tuple(d["padding"]),
            dilation=tuple(d["dilation"]),
            groups=d["groups"],
            bias=d["bias"],
            device=device,
            dtype=dtype,
        )


class LowRankConv2d(_LowRankConvNd):
    """``nn.Conv2d`` replaced by a grouped conv to ``groups·rank`` channels and a grouped 1×1 conv.

    Shape:
        input ``(B, in_channels, H, W)`` → output ``(B, out_channels, H_out, W_out)``.
    """

    conv_type = nn.Conv2d
    kind = "conv2d"
    dense_type = nn.Conv2d

    @classmethod
    def from_conv_factors(
        cls, conv: nn.Conv2d, a: Tensor, b: Tensor, bias: Tensor | None = None
    ) -> LowRankConv2d:
        """Build from a dense conv's hyper-parameters and per-group factors.

        Args:
            conv: the dense layer (for kernel size, stride, padding, dilation, groups).
            a: ``(G, D, r)`` with ``D = C_in/G·kh·kw`` in ``(c, i, j)`` order.
            b: ``(G, r, K)`` with ``K = C_out/G``.
            bias: ``(C_out,)`` or ``None``.
        """
        g, _, r = a.shape
        ref = bias if bias is not None else a
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            r,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=g,
            bias=bias is not None,
            device="meta",
            dtype=ref.dtype,
        ).to_empty(device=ref.device)
        kh, kw = conv.kernel_size
        with torch.no_grad():
            first = a.transpose(1, 2).reshape(g * r, conv.in_channels // g, kh, kw)
            layer.first.weight.copy_(first)
            layer.second.weight.copy_(b.transpose(1, 2).reshape(conv.out_channels, r, 1, 1))
            if bias is not None:
                layer.second.bias.copy_(bias)
        return layer


class LowRankConv1d(_LowRankConvNd):
    """The ``nn.Conv1d`` counterpart of :class:`LowRankConv2d`.

    Shape:
        input ``(B, in_channels, L)`` → output ``(B, out_channels, L_out)``.
    """

    conv_type = nn.Conv1d
    kind = "conv1d"
    dense_type = nn.Conv1d


def _from_conv(cls: type, conv: nn.Module, a: Tensor, b: Tensor) -> nn.Module:
    """A low-rank conv of class ``cls`` from a dense ``conv`` and ``(G, D, r)``/``(G, r, K)``.

    ``D`` is ordered ``(c, *kernel)`` as the flattened filters; works for any spatial rank.
    """
    w = conv.weight
    g, _, r = a.shape
    a, b = a.to(device=w.device, dtype=w.dtype), b.to(device=w.device, dtype=w.dtype)
    layer = cls(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        r,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=g,
        bias=conv.bias is not None,
        device="meta",
        dtype=w.dtype,
    ).to_empty(device=w.device)
    ones = (1,) * len(conv.kernel_size)
    with torch.no_grad():
        first = a.transpose(1, 2).reshape(g * r, conv.in_channels // g, *conv.kernel_size)
        layer.first.weight.copy_(first)
        layer.second.weight.copy_(b.transpose(1, 2).reshape(conv.out_channels, r, *ones))
        if conv.bias is not None:
            layer.second.bias.copy_(conv.bias)
    return layer
