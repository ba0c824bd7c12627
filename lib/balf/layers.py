"""Factorized layers made only of standard torch modules (method §3).

``state_dict``, ``torch.export`` and ONNX export work on them as on any ``nn.Sequential`` of
``nn.Linear``/``nn.Conv2d``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["LowRankConv2d", "LowRankLinear"]


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


class LowRankConv2d(nn.Module):
    """A ``groups``-grouped conv to ``groups·rank`` channels, then a grouped 1×1 conv.

    The first conv keeps the original kernel size, stride, padding and dilation; the second
    (1×1, ``groups`` groups) maps ``groups·rank`` channels to ``out_channels`` and adds the bias.

    Shape:
        input ``(B, in_channels, H, W)`` → output ``(B, out_channels, H_out, W_out)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        rank: int,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
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
        self.first = nn.Conv2d(
            in_channels,
            groups * rank,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
            device=device,
            dtype=dtype,
        )
        self.second = nn.Conv2d(
            groups * rank, out_channels, 1, groups=groups, bias=bias, device=device, dtype=dtype
        )
        self.kernel_size = self.first.kernel_size
        self.stride = self.first.stride
        self.padding = self.first.padding
        self.dilation = self.first.dilation

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

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.first(x))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"rank={self.rank}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}"
        )

    # -- save spec (balf.save / balf.load) ---------------------------------------------------

    kind: ClassVar[str] = "conv2d"
    dense_type: ClassVar[type[nn.Module]] = nn.Conv2d

    @staticmethod
    def dense_spec(dense: nn.Conv2d) -> dict[str, Any]:
        """The dense layer's hyper-parameters, JSON-serialisable."""
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
        """``{"kind", "rank", "dense": hyper-parameters of the replaced nn.Conv2d}``."""
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
    ) -> LowRankConv2d:
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
