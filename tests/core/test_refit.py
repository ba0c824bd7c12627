"""Propagation-aware refit: the anchored fit's algebra (β = 0 is the fit on propagated inputs,
X' = X gives whole-model BALF for every β, the rank-r fit is optimal for its target), its ridge
and rows guard, and the layer-sequential strategy end to end."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import balf
from balf.errors import BALFError
from balf.refit import AnchoredRefit, CrossStatistics, anchored_decomposition, bias_shift

F64 = torch.float64


def _stats(xp: torch.Tensor, x: torch.Tensor) -> CrossStatistics:
    stats = CrossStatistics.zeros(1, xp.shape[1], torch.device("cpu"))
    stats.add(xp[None], x[None])
    return stats


def _problem(seed: int, n: int = 200, d: int = 12, k: int = 9):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64) @ torch.randn(d, d, generator=g, dtype=F64)
    xp = x + 0.3 * torch.randn(n, d, generator=g, dtype=F64)  # propagated: x plus an error
    w = torch.randn(d, k, generator=g, dtype=F64)
    return x, xp, w


def _product(dec, w: torch.Tensor, rank: int) -> torch.Tensor:
    a, b = dec.factors(w[None], rank)
    return (a @ b)[0]


def _top_right(y: torch.Tensor, rank: int) -> torch.Tensor:
    """Projection onto the top-``rank`` right singular vectors of ``y``."""
    v = torch.linalg.svd(y, full_matrices=False)[2][:rank].T
    return v @ v.T


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("rank", [1, 4, 8])
def test_beta_zero_is_the_fit_on_propagated_inputs(seed, rank):
    """β = 0, no ridge: Ŵ = W V_r V_rᵀ with V from X'W, the method's problem on X'."""
    x, xp, w = _problem(seed)
    dec = anchored_decomposition(w[None], _stats(xp, x), 0.0, 0.0, 9)
    expected = w @ _top_right(xp @ w, rank)
    assert torch.allclose(_product(dec, w, rank), expected, atol=1e-8)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_without_propagated_error_every_beta_is_whole_model_balf(beta):
    x, _, w = _problem(1)
    dec = anchored_decomposition(w[None], _stats(x, x), beta, 0.0, 9)
    layer = nn.Linear(12, 9, bias=False).double()
    layer.weight.data = w.T.clone()
    stats = balf.collect_statistics(layer, x, progress=False, side="output")
    whole = balf.decompose_layer(layer, stats.layers[""])
    for rank in (2, 5):
        assert torch.allclose(_product(dec, w, rank), _product(whole, w, rank), atol=1e-8)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_rank_r_fit_is_optimal_for_its_target(seed, beta):
    """Reduced-rank regression (no ridge): the error to the blended target is the least-squares
    residual plus the dropped spectrum, and no other rank-r candidate does better."""
    x, xp, w = _problem(seed)
    dec = anchored_decomposition(w[None], _stats(xp, x), beta, 0.0, 9)
    target = (1 - beta) * xp @ w + beta * x @ w
    w_ls = torch.linalg.lstsq(xp, target).solution
    residual = (xp @ w_ls - target).square().sum()
    for rank in (2, 6):
        got = (xp @ _product(dec, w, rank) - target).square().sum()
        dropped = dec.sigma2[0, rank:].sum()
        assert got == pytest.approx(float(residual + dropped), rel=1e-8)
        for other in (w @ _top_right(xp @ w, rank), w @ _top_right(x @ w, rank)):
            assert got <= (xp @ other - target).square().sum() * (1 + 1e-10)


def test_anchored_fit_is_closer_to_the_dense_outputs():
    x, xp, w = _problem(4)
    stats = _stats(xp, x)
    for rank in (2, 5):
        err = {
            beta: float((xp @ _product(anchored_decomposition(w[None], stats, beta, 0.0, 9), w,
                                       rank) - x @ w).norm())  # fmt: skip
            for beta in (0.0, 0.5, 1.0)
        }
        assert err[1.0] <= err[0.5] <= err[0.0]


def test_ridge_shrinks_and_handles_singular_inputs():
    x, xp, w = _problem(2)
    xp[:, -1] = 0.0  # one input never active: C' is singular
    stats = _stats(xp, x)
    norms = []
    for ridge in (0.0, 1e-3, 1.0, 100.0):
        dec = anchored_decomposition(w[None], stats, 1.0, ridge, 9)
        assert torch.isfinite(dec.fitted).all() and torch.isfinite(dec.sigma2).all()
        norms.append(float((xp @ dec.fitted[0]).norm()))
    assert norms == sorted(norms, reverse=True)  # more ridge, smaller fitted outputs


def test_bias_shift_matches_the_mean_target():
    x, xp, w = _problem(3)
    stats = _stats(xp, x)
    dec = anchored_decomposition(w[None], stats, 1.0, 0.0, 9)
    a, b = dec.factors(w[None], 3)
    shift = bias_shift(w[None], (a, b), stats, 1.0)[0]
    assert torch.allclose((xp @ (a @ b)[0] + shift).mean(0), (x @ w).mean(0), atol=1e-9)


@pytest.mark.parametrize(
    "kwargs", [{"beta": 1.5}, {"beta": -0.1}, {"ridge": -1.0}, {"beta": "1"},
               {"bias_correction": 1}, {"min_rows_per_input": float("nan")}],  # fmt: skip
)
def test_bad_refit_settings(kwargs):
    with pytest.raises(BALFError):
        AnchoredRefit(**kwargs)


# -- the layer-sequential strategy ----------------------------------------------------------------


def _chain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 24), nn.Tanh(), nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 16)
    ).eval()


def test_sequential_beta_zero_fits_each_layer_on_the_compressed_models_inputs():
    """Layer 2 of the result equals BALF's factors from statistics collected on the model whose
    layer 0 is already factorized (its propagated inputs), at the same rank."""
    model, x = _chain(), torch.randn(256, 16)
    config = balf.BALFConfig(0.45, "params")
    whole, whole_report = balf.compress(model, x, config, progress=False)
    strategy = balf.LayerSequential(AnchoredRefit(beta=0.0, ridge=0.0))
    small, report = balf.compress(model, x, config, progress=False, strategy=strategy)
    assert report.ranks == whole_report.ranks
    first = torch.randn(32, 16)
    assert torch.allclose(small[0](first), whole[0](first), atol=1e-5)  # X' = X for the first
    partial = _chain()
    partial[0] = whole[0]
    stats = balf.collect_statistics(partial, x, ["2"], progress=False, side="output")
    expected = balf.factorize_layer(model[2], balf.decompose_layer(model[2], stats.layers["2"]),
                                    report.ranks["2"])  # fmt: skip
    inputs = torch.randn(32, 24)
    assert torch.allclose(small[2](inputs), expected(inputs), atol=1e-5)
    assert report.strategy["type"] == "LayerSequential"
    assert all(o["refit"] for o in report.strategy["layers"].values())


def test_sequential_anchored_is_closer_to_the_dense_model_on_calibration_data():
    model, x = _chain(), torch.randn(512, 16)
    config = balf.BALFConfig(0.4, "params")
    errors = {}
    for beta in (0.0, 1.0):
        strategy = balf.LayerSequential(AnchoredRefit(beta=beta, ridge=0.0))
        small, _ = balf.compress(model, x, config, progress=False, strategy=strategy)
        with torch.no_grad():
            errors[beta] = float((small(x) - model(x)).norm())
    assert errors[1.0] < errors[0.0]


def test_rows_guard_keeps_the_whole_model_fit_and_says_so():
    model, x = _chain(), torch.randn(20, 16)  # 20 rows for 24 inputs of layers 2 and 4
    config = balf.BALFConfig(0.4, "params")
    with pytest.warns(UserWarning, match="fewer calibration rows"):
        whole, _ = balf.compress(model, x, config, progress=False)
    with pytest.warns(UserWarning, match="fewer calibration rows"):
        small, report = balf.compress(model, x, config, progress=False,
                                      strategy=balf.LayerSequential())  # fmt: skip
    outcome = report.strategy["layers"]
    assert outcome["0"]["refit"] and not outcome["4"]["refit"]
    assert "20 calibration rows" in report.layers["4"].note
    assert torch.equal(small[4].first.weight, whole[4].first.weight)


def test_sequential_refit_with_a_conv_net_and_one_shot_data_is_refused():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3),
                          nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1)).eval()  # fmt: skip
    x = torch.randn(64, 3, 10, 10)
    strategy = balf.LayerSequential(AnchoredRefit(beta=1.0), samples=32)
    small, report = balf.compress(model, x, balf.BALFConfig(0.5), progress=False,
                                  strategy=strategy)  # fmt: skip
    assert small(x).shape == model(x).shape
    assert all(o["rows"] == 32 * 100 or o["rows"] == 32 * 64
               for o in report.strategy["layers"].values())  # fmt: skip
    with pytest.raises(BALFError, match="re-iterable"):
        balf.Compressor(model, iter([x]), strategy=strategy)
