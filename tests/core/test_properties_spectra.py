"""Valid spectra and sane factors on ill-conditioned and rank-deficient data, on both routes.

The Eckart–Young tests of ``test_decomposition.py`` check the *product* of the factors on the
calibration data. These check what they cannot see: that the spectrum is a spectrum (σ² ≥ 0,
descending, energies non-decreasing up to exactly 1), that tiny-but-real directions of the data
are kept (full rank still reproduces the layer when one input channel is 10⁶ times smaller than
the others), and that directions the data does not have do not blow the factors up (the whitening
tolerance is the knob both of these pin down, from either side).
"""

from __future__ import annotations

import pytest
import torch
from _fixtures import RANK_DEFICIENT
from torch import nn

import balf
from balf import factorize_layer
from balf.layers.dispatch import geometry_of, weight_matrices

F64 = torch.float64


def _scaled_channel(x: torch.Tensor, channel: int, scale: float) -> torch.Tensor:
    """``x`` with input channel ``channel`` (dim 1) multiplied by ``scale``."""
    x = x.clone()
    x[:, channel] *= scale
    return x


# (id, layer factory, input factory): full-rank data with one channel 10⁶ times smaller, so the
# input Gram has a condition number of about 10¹².
ILL_CONDITIONED = [
    (
        "linear-expanding",
        lambda dt: nn.Linear(8, 12, dtype=dt),
        lambda dt: _scaled_channel(torch.randn(50, 8, dtype=dt), 3, 1e-6),
    ),
    (
        "conv-expanding",
        lambda dt: nn.Conv2d(2, 20, 3, padding=1, dtype=dt),
        lambda dt: _scaled_channel(torch.randn(4, 2, 6, 6, dtype=dt), 1, 1e-6),
    ),
]


ALL = ILL_CONDITIONED + RANK_DEFICIENT
IDS = [c[0] for c in ALL]


def _decompose(layer: nn.Module, x: torch.Tensor, side: str) -> balf.LayerDecomposition:
    stats = balf.collect_statistics(layer, x, side=side, progress=False)
    return balf.decompose_layer(layer, stats.layers[""])


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize(("case", "make_layer", "make_x"), ALL, ids=IDS)
def test_spectrum_is_valid(case, make_layer, make_x, side, dtype):
    layer, x = make_layer(dtype), make_x(dtype)
    dec = _decompose(layer, x, side)
    sigma2, e = dec.sigma2, dec.energies()
    assert sigma2.shape == (geometry_of(layer).groups, geometry_of(layer).max_rank)
    assert torch.isfinite(sigma2).all()
    assert (sigma2 >= 0).all(), "squared singular values must never be negative"
    assert (sigma2[:, 1:] <= sigma2[:, :-1]).all(), "the spectrum must be descending"
    assert (e[1:] >= e[:-1]).all(), "energies must be non-decreasing"
    assert (e <= 1).all() and e[-1] == 1
    assert (e >= 0).all()
    w = weight_matrices(layer)
    for r in range(1, dec.max_rank + 1):
        a, b = dec.factors(w, r)
        assert torch.isfinite(a).all() and torch.isfinite(b).all(), r


def test_plain_svd_spectrum_is_valid_for_a_rank_deficient_weight():
    layer = nn.Linear(9, 7, dtype=F64)
    with torch.no_grad():
        layer.weight[3:] = 0  # rank 3
        layer.weight[1] = layer.weight[0]  # rank 2
    dec = balf.decompose_layer(layer)
    e = dec.energies()
    assert (dec.sigma2 >= 0).all() and (e[1:] >= e[:-1]).all() and (e <= 1).all()
    w = weight_matrices(layer)
    for r in range(1, dec.max_rank + 1):
        a, b = dec.factors(w, r)
        # no rank-one term of a plain SVD is larger than the weight's spectral norm
        terms = a.norm(dim=1) * b.norm(dim=2)
        assert (terms <= torch.linalg.matrix_norm(w, ord=2).max() * (1 + 1e-9)).all(), r
    torch.testing.assert_close(a @ b, w, rtol=0, atol=1e-12)


# Relative error allowed on the small channel's contribution. The input route whitens the D×D
# input Gram (condition ~10¹²) and must keep the direction to ~machine precision; the output
# route works on YᵀY, where that direction's eigenvalue is 10⁻¹² of the largest and only an
# angle of ~eps/10⁻¹² ≈ 10⁻⁴ to the null space is resolvable — but it must still be kept.
SMALL_CHANNEL_TOLERANCE = {"input": 1e-6, "output": 1e-2}


@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize(
    ("case", "make_layer", "make_x"), ILL_CONDITIONED, ids=[c[0] for c in ILL_CONDITIONED]
)
def test_full_rank_reproduces_the_layer_on_ill_conditioned_data(case, make_layer, make_x, side):
    """The 10⁶-times-smaller channel is a real direction of the data: it must not be dropped."""
    layer, x = make_layer(F64), make_x(F64)
    dec = _decompose(layer, x, side)
    small = factorize_layer(layer, dec, geometry_of(layer).max_rank)
    # what the small channel contributes to the output: the error must be far below it
    tiny = torch.zeros_like(x)
    channel = 3 if isinstance(layer, nn.Linear) else 1
    tiny[:, channel] = x[:, channel]
    with torch.no_grad():
        error = (small(x) - layer(x)).norm()
        contribution = (layer(tiny) - layer(torch.zeros_like(x))).norm()
    assert contribution > 0
    assert error <= SMALL_CHANNEL_TOLERANCE[side] * contribution, (
        float(error),
        float(contribution),
    )


@pytest.mark.parametrize(
    ("case", "make_layer", "make_x"), RANK_DEFICIENT[:3], ids=[c[0] for c in RANK_DEFICIENT[:3]]
)
def test_input_route_factors_stay_of_the_order_of_the_output_route_ones(case, make_layer, make_x):
    """Directions the data lacks must not be inverted (they would blow the factors up).

    On unit-scale data the whitening factors are of the order of the output-route ones; and the
    input route's effective weight ``A·B`` is the output route's projected onto the data's row
    space, so it is never larger.
    """
    layer, x = make_layer(F64), make_x(F64)
    d_in, d_out = _decompose(layer, x, "input"), _decompose(layer, x, "output")
    w = weight_matrices(layer)
    for r in range(1, d_in.max_rank + 1):
        a_in, b_in = d_in.factors(w, r)
        a_out, b_out = d_out.factors(w, r)
        assert a_in.abs().max() <= 10 * a_out.abs().max(), (r, float(a_in.abs().max()))
        assert b_in.abs().max() <= 10 * b_out.abs().max(), (r, float(b_in.abs().max()))
        norm_in = torch.linalg.matrix_norm(a_in @ b_in)
        norm_out = torch.linalg.matrix_norm(a_out @ b_out)
        assert (norm_in <= norm_out * (1 + 1e-9)).all(), r
