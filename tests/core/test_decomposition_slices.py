"""Wide layers are decomposed and factorized with the weight converted to float64 one slice at a
time (``balf.decomposition._F64_SLICE`` elements; a language model's output head is never held
in float64 whole): the spectra and the products of the factors equal the one-piece computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import balf
import balf.decomposition as decomposition
from balf.decomposition import decompose_layer
from balf.layers.dispatch import weight_matrices

LAYERS = {
    "wide linear, input side": (lambda: nn.Linear(8, 300), "input", (64, 8)),
    "tall linear, output side": (lambda: nn.Linear(300, 8), "output", (64, 300)),
    "grouped conv, input side": (lambda: nn.Conv2d(4, 40, 3, groups=2), "input", (6, 4, 7, 7)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", LAYERS)
def test_sliced_float64_equals_one_piece(name, dtype, monkeypatch):
    make, side, shape = LAYERS[name]
    torch.manual_seed(0)
    layer = make().to(dtype)
    x = torch.randn(*shape, dtype=dtype)
    stats = balf.collect_statistics(layer, x, side=side, progress=False).layers[""]
    whole = decompose_layer(layer, stats)
    monkeypatch.setattr(decomposition, "_F64_SLICE", 7)  # a few columns or rows per slice
    sliced = decompose_layer(layer, stats)
    torch.testing.assert_close(sliced.sigma2, whole.sigma2, rtol=1e-10, atol=1e-12)
    w = weight_matrices(layer)
    for rank in (1, 3, whole.max_rank):
        a1, b1 = sliced.factors(w, rank)
        a0, b0 = whole.factors(w, rank)
        assert a1.dtype == b1.dtype == dtype  # float64 layers: sliced float64 products
        tol = 1e-8 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(a1 @ b1, a0 @ b0, rtol=tol, atol=tol)
