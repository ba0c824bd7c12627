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

from balf.layers.kind import kind_name_of_class

__all__ = ["LowRankConv1d", "LowRankConv2d", "LowRankLinear"]


def _plain(value: Any) -> Any:
    """Tuples as lists (what JSON gives back), everything else unchanged."""
    return list(value) if isinstance(value, tuple) else value


class _LowRankBase(nn.Module):
    """Two standard layers in sequence, ``first`` then ``second`` (which holds the bias).

    Subclasses declare :meth:`_hyper_parameters` of a dense or low-rank layer;
    :meth:`spec`/:meth:`from_spec` follow. The kind's name and dense type are declared once, by
    the :class:`balf.LayerKind` whose ``lowrank_type`` the subclass is (:attr:`kind`).
    """

    rank: int
    first: nn.Module
    second: nn.Module

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.first(x))

    @property
    def kind(self) -> str | None:
        """The name of the layer kind that made this layer (written in save specs).

        A layer a :class:`balf.LayerKind` built carries that kind's ``name`` (one low-rank class
        may serve several kinds); one built directly (``LowRankLinear.from_linear``) the name of
        the first registered kind whose ``lowrank_type`` is its class.
        """
        label = self.__dict__.get("_kind")
        return label if label is not None else kind_name_of_class(type(self))

    @kind.setter
    def kind(self, name: str) -> None:
        self.__dict__["_kind"] = name

    # -- what models ask of the dense layer they hold ----------------------------------------
    # Model code reads attributes of the layers it built (T5 casts its input to
    # ``self.wo.weight.dtype`` in every forward); a factorized layer answers as the dense one.

    @property
    def weight(self) -> Tensor:
        """The dense weight the factors multiply to, in the dense layer's layout (read-only).

        Computed on demand from the factors at every read: one product costing
        ``out·rank·in`` multiply-adds (per group for a grouped conv) and the memory of a dense
        weight while the result is held; ``FlopCounterMode`` (and so ``balf.count_flops``)
        counts it when a model reads it in ``forward``. The result is detached: writing to it
        does not change the layer and no gradient flows through it (train the factors
        ``first.weight``/``second.weight``). Use :attr:`dtype`/:attr:`device` when only those
        are needed.
        """
        with torch.no_grad():
            return self._dense_weight()

    def _dense_weight(self) -> Tensor:
        raise NotImplementedError

    @property
    def bias(self) -> Tensor | None:
        """The bias the layer adds (that of the dense layer it replaced), or ``None``."""
        return _final_bias(self)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the factors (that of the dense layer it replaced)."""
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """The device of the factors."""
        return next(self.parameters()).device

    @staticmethod
    def _hyper_parameters(layer: nn.Module, bias: bool) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _from_hyper_parameters(cls, d: dict[str, Any], rank: int, **kw: Any) -> _LowRankBase:
        raise NotImplementedError

    # -- save spec (balf.save / balf.load) ---------------------------------------------------

    @classmethod
    def dense_spec(cls, dense: nn.Module) -> dict[str, Any]:
        """The dense layer's hyper-parameters, JSON-serialisable."""
        return cls._hyper_parameters(dense, dense.bias is not None)

    def spec(self) -> dict[str, Any]:
        """``{"kind", "rank", "dense": hyper-parameters of the replaced dense layer}``."""
        dense = self._hyper_parameters(self, _final_bias(self) is not None)
        return {"kind": self.kind, "rank": self.rank, "dense": dense}

    @classmethod
    def from_spec(
        cls,
        spec: dict[str, Any],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> _LowRankBase:
        """An uninitialised layer of the shape :meth:`spec` describes (weights loaded after)."""
        return cls._from_hyper_parameters(spec["dense"], spec["rank"], device=device, dtype=dtype)


def _final_bias(layer: nn.Module) -> torch.Tensor | None:
    """The bias a low-rank layer adds, also when its ``second`` was factorized again."""
    while isinstance(layer, _LowRankBase):
        layer = layer.second
    return getattr(layer, "bias", None)


class LowRankLinear(_LowRankBase):
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

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"

    def _dense_weight(self) -> Tensor:
        """``(out_features, in_features)``, as ``nn.Linear.weight``."""
        return self.second.weight @ self.first.weight

    @staticmethod
    def _hyper_parameters(layer: nn.Module, bias: bool) -> dict[str, Any]:
        return {"in_features": layer.in_features, "out_features": layer.out_features, "bias": bias}

    @classmethod
    def _from_hyper_parameters(cls, d: dict[str, Any], rank: int, **kw: Any) -> LowRankLinear:
        return cls(d["in_features"], d["out_features"], rank, d["bias"], **kw)


class _LowRankConvNd(_LowRankBase):
    """A ``groups``-grouped conv to ``groups·rank`` channels, then a grouped 1-wide conv.

    The first conv keeps the original kernel size, stride, padding and dilation; the second
    (kernel 1, ``groups`` groups) maps ``groups·rank`` channels to ``out_channels`` and adds the
    bias. Subclasses fix the convolution type (:attr:`conv_type`) and the save-spec ``kind``.
    """

    conv_type: ClassVar[type[nn.Module]]

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

    padding_mode: ClassVar[str] = "zeros"

    def _dense_weight(self) -> Tensor:
        """``(out_channels, in_channels/groups, *kernel_size)``, as the dense conv's weight."""
        g = self.groups
        first = self.first.weight.reshape(g, self.rank, -1)  # (G, r, C_in/g·∏kernel)
        second = self.second.weight.reshape(g, self.out_channels // g, self.rank)  # (G, K, r)
        return (second @ first).reshape(
            self.out_channels, self.in_channels // g, *self.kernel_size
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"rank={self.rank}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}"
        )

    @staticmethod
    def _hyper_parameters(layer: nn.Module, bias: bool) -> dict[str, Any]:
        return {
            "in_channels": layer.in_channels,
            "out_channels": layer.out_channels,
            "kernel_size": _plain(layer.kernel_size),
            "stride": _plain(layer.stride),
            "padding": _plain(layer.padding),
            "dilation": _plain(layer.dilation),
            "groups": layer.groups,
            "bias": bias,
        }

    @classmethod
    def _from_hyper_parameters(cls, d: dict[str, Any], rank: int, **kw: Any) -> _LowRankConvNd:
        padding = d["padding"] if isinstance(d["padding"], str) else tuple(d["padding"])
        return cls(
            d["in_channels"],
            d["out_channels"],
            tuple(d["kernel_size"]),
            rank,
            stride=tuple(d["stride"]),
            padding=padding,
            dilation=tuple(d["dilation"]),
            groups=d["groups"],
            bias=d["bias"],
            **kw,
        )


class LowRankConv2d(_LowRankConvNd):
    """``nn.Conv2d`` replaced by a grouped conv to ``groups·rank`` channels and a grouped 1×1 conv.

    Shape:
        input ``(B, in_channels, H, W)`` → output ``(B, out_channels, H_out, W_out)``.
    """

    conv_type = nn.Conv2d

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
        ref = bias if bias is not None else a
        return _build_conv(cls, conv, a, b, bias, ref.dtype, ref.device)


class LowRankConv1d(_LowRankConvNd):
    """The ``nn.Conv1d`` counterpart of :class:`LowRankConv2d`.

    Shape:
        input ``(B, in_channels, L)`` → output ``(B, out_channels, L_out)``.
    """

    conv_type = nn.Conv1d


def _from_conv(cls: type, conv: nn.Module, a: Tensor, b: Tensor) -> nn.Module:
    """A low-rank conv of class ``cls`` from a dense ``conv`` and ``(G, D, r)``/``(G, r, K)``.

    ``D`` is ordered ``(c, *kernel)`` as the flattened filters; works for any spatial rank. The
    factors are cast to the conv's dtype and device; its bias is kept.
    """
    w = conv.weight
    a, b = a.to(device=w.device, dtype=w.dtype), b.to(device=w.device, dtype=w.dtype)
    bias = conv.bias.detach() if conv.bias is not None else None
    return _build_conv(cls, conv, a, b, bias, w.dtype, w.device)


def _build_conv(
    cls: type,
    conv: nn.Module,
    a: Tensor,
    b: Tensor,
    bias: Tensor | None,
    dtype: torch.dtype,
    device: torch.device,
) -> nn.Module:
    """``cls`` with ``conv``'s hyper-parameters, ``groups = G`` and weights from the factors.

    ``a``: ``(G, D, r)``, ``b``: ``(G, r, K)``, ``bias``: ``(C_out,)`` or ``None``; built on the
    meta device (no random initialisation), then materialised on ``device`` in ``dtype``.
    """
    g, _, r = a.shape
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
        dtype=dtype,
    ).to_empty(device=device)
    ones = (1,) * len(conv.kernel_size)
    with torch.no_grad():
        first = a.transpose(1, 2).reshape(g * r, conv.in_channels // g, *conv.kernel_size)
        layer.first.weight.copy_(first)
        layer.second.weight.copy_(b.transpose(1, 2).reshape(conv.out_channels, r, *ones))
        if bias is not None:
            layer.second.bias.copy_(bias)
    return layer
