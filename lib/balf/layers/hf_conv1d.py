"""Hugging Face ``transformers``' ``Conv1D`` (GPT-2's ``c_attn``, ``c_proj``, ``c_fc``).

Despite its name, ``Conv1D(nf, nx)`` is a linear layer with a transposed weight: ``y = x·W + b``
with ``W`` ``(nx, nf)`` = ``(in, out)``. So ``G = 1``, ``D = nx``, ``K = nf``, ``W_g = W``; the
replacement is :class:`LowRankHFConv1D`, a :class:`balf.LowRankLinear` (two ``nn.Linear``) that
saves and loads under the kind ``"hf_conv1d"``.

Imported (and registered) by :func:`balf.layers.optional.register_optional` once
``transformers.pytorch_utils`` is loaded; importing it imports ``transformers``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from balf.layers._grams import gram_2d
from balf.layers.geometry import LayerGeometry
from balf.layers.kind import LayerKind, register_layer_kind
from balf.layers.lowrank import LowRankLinear

__all__ = ["HFConv1DKind", "LowRankHFConv1D"]


class LowRankHFConv1D(LowRankLinear):
    """``Conv1D(nf, nx)`` replaced by ``Linear(nx, r, bias=False) → Linear(r, nf)``.

    Shape:
        input ``(*, nx)`` → output ``(*, nf)``.
    """

    @property
    def nx(self) -> int:
        """Input features, as ``Conv1D.nx``."""
        return self.in_features

    @property
    def nf(self) -> int:
        """Output features, as ``Conv1D.nf``."""
        return self.out_features

    def _dense_weight(self) -> Tensor:
        """``(nx, nf)``, as ``Conv1D.weight`` (the transpose of ``nn.Linear``'s layout)."""
        return (self.second.weight @ self.first.weight).t()

    @staticmethod
    def _hyper_parameters(layer: nn.Module, bias: bool) -> dict[str, Any]:
        if isinstance(layer, Conv1D):
            return {"in_features": layer.nx, "out_features": layer.nf, "bias": bias}
        return LowRankLinear._hyper_parameters(layer, bias)


class HFConv1DKind(LayerKind):
    """Rows are the input/output vectors of every leading position, as for ``nn.Linear``."""

    name = "hf_conv1d"
    dense_type = Conv1D
    lowrank_type = LowRankHFConv1D
    token_rows = True

    def geometry(self, module: Conv1D) -> LayerGeometry:
        return LayerGeometry(self.name, 1, module.nx, module.nf)

    def weight_matrices(self, module: Conv1D) -> Tensor:
        return self.weight(module).detach().unsqueeze(0)  # (1, nx, nf): already (D, K)

    def output_rows(self, module: Conv1D, output: Tensor) -> Tensor:
        y = output.reshape(1, -1, module.nf)
        return y - module.bias if module.bias is not None else y

    def input_rows(self, module: Conv1D, x: Tensor) -> Iterator[Tensor]:
        yield x.reshape(1, -1, module.nx)

    def output_gram(self, module: Conv1D, output: Tensor, dtype: torch.dtype) -> Tensor:
        rows = output.to(dtype).reshape(-1, module.nf)
        if module.bias is not None:
            rows = rows - module.bias.to(dtype)
        return gram_2d(rows).unsqueeze(0)

    def input_gram(self, module: Conv1D, x: Tensor, dtype: torch.dtype) -> Tensor:
        return gram_2d(x.to(dtype).reshape(-1, module.nx)).unsqueeze(0)

    def build(self, module: Conv1D, a: Tensor, b: Tensor) -> LowRankHFConv1D:
        return LowRankHFConv1D.from_linear(module, a[0], b[0])


register_layer_kind(HFConv1DKind())
