"""Activation error of a factorized layer equals the Eckart–Young bound, on both routes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import balf
from balf import factorize_layer
from balf.layers.dispatch import geometry_of, output_rows

F64 = torch.float64


def _linear(i, o):
    return nn.Linear(i, o, dtype=F64)


def _conv(ci, co, k, **kw):
    return nn.Conv2d(ci, co, k, dtype=F64, **kw)


def _conv1d(ci, co, k, **kw):
    return nn.Conv1d(ci, co, k, dtype=F64, **kw)


# (id, layer factory, input factory)
CASES = [
    ("linear-2d", lambda: _linear(12, 7), lambda: torch.randn(40, 12, dtype=F64)),
    ("linear-3d-expanding", lambda: _linear(6, 20), lambda: torch.randn(4, 9, 6, dtype=F64)),
    ("conv-padded", lambda: _conv(4, 6, 3, padding=1), lambda: torch.randn(3, 4, 7, 7, dtype=F64)),
    (
        "conv-strided",
        lambda: _conv(4, 5, 3, stride=2, padding=(1, 0)),
        lambda: torch.randn(3, 4, 9, 8, dtype=F64),
    ),
    (
        "conv-dilated",
        lambda: _conv(3, 8, 3, dilation=2, padding=2),
        lambda: torch.randn(2, 3, 9, 9, dtype=F64),
    ),
    (
        "conv-grouped",
        lambda: _conv(4, 6, 3, groups=2, padding=1, bias=False),
        lambda: torch.randn(3, 4, 6, 6, dtype=F64),
    ),
    (
        "conv-same-even-kernel",
        lambda: _conv(3, 5, (4, 2), padding="same"),
        lambda: torch.randn(2, 3, 7, 6, dtype=F64),
    ),
    ("conv-1x1-expanding", lambda: _conv(3, 10, 1), lambda: torch.randn(2, 3, 5, 5, dtype=F64)),
    (
        "conv-depthwise",
        lambda: _conv(4, 4, 3, groups=4, padding=1),
        lambda: torch.randn(2, 4, 5, 5, dtype=F64),
    ),
    ("conv1d-padded", lambda: _conv1d(4, 6, 3, padding=1), lambda: torch.randn(3, 4, 9, dtype=F64)),
    (
        "conv1d-strided-dilated",
        lambda: _conv1d(4, 5, 3, stride=2, dilation=2, padding=1),
        lambda: torch.randn(3, 4, 11, dtype=F64),
    ),
    (
        "conv1d-grouped",
        lambda: _conv1d(4, 6, 3, groups=2, padding=1, bias=False),
        lambda: torch.randn(3, 4, 8, dtype=F64),
    ),
    (
        "conv1d-same-even-kernel",
        lambda: _conv1d(3, 5, 4, padding="same"),
        lambda: torch.randn(2, 3, 7, dtype=F64),
    ),
    ("conv1d-1x1-expanding", lambda: _conv1d(3, 10, 1), lambda: torch.randn(2, 3, 6, dtype=F64)),
]

RANK_DEFICIENT = [
    ("fewer-rows-than-D", lambda: _linear(12, 9), lambda: torch.randn(5, 12, dtype=F64)),
    (
        "dead-channels",
        lambda: _conv(4, 6, 3, padding=1),
        lambda: (
            torch.randn(3, 4, 6, 6, dtype=F64)
            * torch.tensor([1.0, 0, 1, 0], dtype=F64).view(1, 4, 1, 1)
        ),
    ),
    (
        "duplicated-channels",
        lambda: _linear(8, 10),
        lambda: torch.randn(30, 4, dtype=F64).repeat(1, 2),
    ),
]


def _true_spectrum(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """σ² of the actual output matrices Y_g, (G, R), computed independently by SVD."""
    with torch.no_grad():
        y = output_rows(layer, layer(x))
    s = torch.linalg.svdvals(y)
    r = geometry_of(layer).max_rank
    out = torch.zeros(y.shape[0], r, dtype=F64)
    n = min(r, s.shape[1])
    out[:, :n] = s[:, :n] ** 2
    return out


def _activation_error(layer, small, x) -> float:
    with torch.no_grad():
        return float((layer(x) - small(x)).square().sum())


def _decompose(layer, x, side):
    stats = balf.collect_statistics(layer, x, side=side, progress=False)
    return balf.decompose_layer(layer, stats.layers[""])


@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize(
    ("case", "make_layer", "make_x"),
    CASES + RANK_DEFICIENT,
    ids=[c[0] for c in CASES + RANK_DEFICIENT],
)
def test_activation_error_equals_eckart_young_bound(case, make_layer, make_x, side):
    layer, x = make_layer(), make_x()
    dec = _decompose(layer, x, side)
    sigma2 = _true_spectrum(layer, x)
    total = float(sigma2.sum())
    big_r = geometry_of(layer).max_rank
    for r in sorted({1, max(1, big_r // 2), big_r}):
        small = factorize_layer(layer, dec, r)
        err = _activation_error(layer, small, x)
        bound = float(sigma2[:, r:].sum())
        assert err == pytest.approx(bound, rel=1e-6, abs=1e-9 * total), (case, side, r)


@pytest.mark.parametrize(
    ("case", "make_layer", "make_x"),
    CASES + RANK_DEFICIENT,
    ids=[c[0] for c in CASES + RANK_DEFICIENT],
)
def test_both_routes_give_the_same_energies(case, make_layer, make_x):
    layer, x = make_layer(), make_x()
    d_in, d_out = _decompose(layer, x, "input"), _decompose(layer, x, "output")
    scale = float(d_out.sigma2.max())
    torch.testing.assert_close(d_in.sigma2, d_out.sigma2, rtol=0, atol=1e-9 * scale)
    torch.testing.assert_close(d_in.energies(), d_out.energies(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("side", ["input", "output", "plain-svd"])
@pytest.mark.parametrize(("case", "make_layer", "make_x"), CASES, ids=[c[0] for c in CASES])
def test_full_rank_reproduces_the_dense_layer(case, make_layer, make_x, side):
    layer, x = make_layer(), make_x()
    dec = balf.decompose_layer(layer) if side == "plain-svd" else _decompose(layer, x, side)
    small = factorize_layer(layer, dec, geometry_of(layer).max_rank)
    fresh = make_x()  # full-rank calibration data: exact on any input
    with torch.no_grad():
        torch.testing.assert_close(small(fresh), layer(fresh), rtol=1e-9, atol=1e-9)


SVD_CASES = CASES[:6] + [c for c in CASES if c[0].startswith("conv1d")]


@pytest.mark.parametrize(("case", "make_layer", "make_x"), SVD_CASES, ids=[c[0] for c in SVD_CASES])
def test_plain_svd_error_equals_weight_tail(case, make_layer, make_x):
    layer = make_layer()
    dec = balf.decompose_layer(layer)
    w = balf.layers.dispatch.weight_matrices(layer).to(F64)
    for r in (1, dec.max_rank // 2 or 1):
        a, b = dec.factors(w, r)
        err = float((w - a @ b).square().sum())
        s2 = torch.linalg.svdvals(w).square()
        assert err == pytest.approx(float(s2[:, r:].sum()), rel=1e-8, abs=1e-12)


def test_zero_output_layer_has_unit_energy():
    layer = _linear(5, 3)
    with torch.no_grad():
        layer.weight.zero_()
    dec = _decompose(layer, torch.randn(10, 5, dtype=F64), "output")
    assert torch.all(dec.energies() == 1)


def test_factors_follow_layer_dtype():
    layer = nn.Linear(8, 6)
    dec = _decompose(layer, torch.randn(20, 8), None)
    small = factorize_layer(layer, dec, 3)
    assert small.first.weight.dtype == torch.float32
    assert dec.sigma2.dtype == F64
