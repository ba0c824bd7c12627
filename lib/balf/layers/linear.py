"""``nn.Linear`` (any leading dims, e.g. ViT tokens): ``G = 1``, ``D = in``, ``K = out``, ``Wᵀ``."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from balf.layers._grams import gram_2d
from balf.layers.geometry import LayerGeometry
from balf.layers.kind import LayerKind, register_layer_kind
from balf.layers.lowrank import LowRankLinear

__all__ = ["LinearKind"]


class LinearKind(LayerKind):
    """Rows are the input/output vectors of every leading position (batch × tokens × …)."""

    name = "linear"
    dense_type = nn.Linear
    lowrank_type = LowRankLinear
    token_rows = True

    def geometry(self, module: nn.Linear) -> LayerGeometry:
        return LayerGeometry(self.name, 1, module.in_features, module.out_features)

    def weight_matrices(self, module: nn.Linear) -> Tensor:
        return self.weight(module).detach().t().unsqueeze(0)

    def output_rows(self, module: nn.Linear, output: Tensor) -> Tensor:
        y = output.reshape(1, -1, module.out_features)
        return y - module.bias if module.bias is not None else y

    def input_rows(self, module: nn.Linear, x: Tensor) -> Iterator[Tensor]:
        yield x.reshape(1, -1, module.in_features)

    def output_gram(self, module: nn.Linear, output: Tensor, dtype: torch.dtype) -> Tensor:
        rows = output.to(dtype).reshape(-1, module.out_features)
        if module.bias is not None:
            rows = rows - module.bias.to(dtype)
        return gram_2d(rows).unsqueeze(0)

    def input_gram(self, module: nn.Linear, x: Tensor, dtype: torch.dtype) -> Tensor:
        return gram_2d(x.to(dtype).reshape(-1, module.in_features)).unsqueeze(0)

    def build(self, module: nn.Linear, a: Tensor, b: Tensor) -> LowRankLinear:
        return LowRankLinear.from_linear(module, a[0], b[0])


register_layer_kind(LinearKind())
