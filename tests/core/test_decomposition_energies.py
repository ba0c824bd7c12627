"""``layer_energies`` is ``decompose_layer(...).energies()`` without the decomposition.

The energies-only path (block by block's allocation pass) takes the same route, the same
whitening (Cholesky or eigen, by the same condition check) and the same precision of the spectral
step as the decomposition, and computes only eigenvalues. The eigensolver without eigenvectors
rounds differently, so the curves are compared to a stated tolerance:

* float32 spectral step: ``|Δe(r)| ≤ F32_ENERGY_TOLERANCE`` (1e-5, the tolerance each of the two
  float32 curves already has against the float64 one);
* float64 spectral step (float64 layers; float32 layers whose spectrum fails the check):
  ``|Δe(r)| ≤ 1e-12``;

on Linear, Conv1d and Conv2d layers (grouped and depthwise too), both sides, spread and
outlier spectra, ill-conditioned and rank-deficient Grams, all-zero outputs and plain SVD. The
precision choices themselves (which whitening, which dtype for the spectral step) are recorded
and must be the same.
"""

from __future__ import annotations

import pytest
import torch
from _fixtures import RANK_DEFICIENT
from torch import nn

import balf
import balf._spectral as spectral
import balf.decomposition as decomposition
from balf.decomposition import layer_energies
from balf.layers.dispatch import geometry_of

F64 = torch.float64
F32 = torch.float32
F64_TOLERANCE = 1e-12


def _scaled_channel(x: torch.Tensor, channel: int, scale: float) -> torch.Tensor:
    x = x.clone()
    x[:, channel] *= scale
    return x


def _spread(rows: int, n_in: int, decay: float, spike: float, dtype: torch.dtype) -> torch.Tensor:
    """``(rows, n_in)`` inputs whose Gram has eigenvalues ``decay**i`` (top three × ``spike``)."""
    scales = decay ** torch.arange(n_in, dtype=F64)
    scales[:3] *= spike
    q, _ = torch.linalg.qr(torch.randn(n_in, n_in, dtype=F64))
    return ((torch.randn(rows, n_in, dtype=F64) * scales.sqrt()) @ q.T).to(dtype)


# (id, layer factory, input factory), both taking the dtype
CASES = [
    (
        "linear-expanding",
        lambda dt: nn.Linear(24, 40, dtype=dt),
        lambda dt: _spread(200, 24, 0.9, 1.0, dt),
    ),
    (
        "linear-narrowing-outliers",
        lambda dt: nn.Linear(64, 24, dtype=dt),
        lambda dt: _spread(300, 64, 0.99, 1e4, dt),
    ),
    (
        "linear-3d",
        lambda dt: nn.Linear(10, 16, bias=False, dtype=dt),
        lambda dt: torch.randn(4, 9, 10, dtype=dt),
    ),
    (
        "conv2d-padded",
        lambda dt: nn.Conv2d(4, 6, 3, padding=1, dtype=dt),
        lambda dt: torch.randn(3, 4, 7, 7, dtype=dt),
    ),
    (
        "conv2d-grouped",
        lambda dt: nn.Conv2d(4, 6, 3, groups=2, padding=1, bias=False, dtype=dt),
        lambda dt: torch.randn(3, 4, 6, 6, dtype=dt),
    ),
    (
        "conv2d-depthwise",
        lambda dt: nn.Conv2d(4, 4, 3, groups=4, padding=1, dtype=dt),
        lambda dt: torch.randn(2, 4, 5, 5, dtype=dt),
    ),
    (
        "conv2d-1x1-expanding",
        lambda dt: nn.Conv2d(3, 10, 1, dtype=dt),
        lambda dt: torch.randn(2, 3, 5, 5, dtype=dt),
    ),
    (
        "conv1d-padded",
        lambda dt: nn.Conv1d(4, 6, 3, padding=1, dtype=dt),
        lambda dt: torch.randn(3, 4, 9, dtype=dt),
    ),
    # ill-conditioned: one channel 10⁶ times smaller (condition ~10¹²: eigen whitening)
    (
        "ill-conditioned-linear",
        lambda dt: nn.Linear(8, 12, dtype=dt),
        lambda dt: _scaled_channel(torch.randn(50, 8, dtype=dt), 3, 1e-6),
    ),
    (
        "ill-conditioned-conv2d",
        lambda dt: nn.Conv2d(2, 20, 3, padding=1, dtype=dt),
        lambda dt: _scaled_channel(torch.randn(4, 2, 6, 6, dtype=dt), 1, 1e-6),
    ),
    (
        "ill-conditioned-grouped-conv2d",
        lambda dt: nn.Conv2d(4, 8, 3, groups=2, padding=1, dtype=dt),
        lambda dt: _scaled_channel(torch.randn(3, 4, 6, 6, dtype=dt), 2, 1e-6),
    ),
    *RANK_DEFICIENT,
]
IDS = [c[0] for c in CASES]


class _Choices:
    """Records the whitening kinds and spectral dtypes the decomposition code chooses."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list = []
        of, dtype_of = spectral.Whitening.of.__func__, decomposition.spectral_dtype

        def recording_of(cls, gram):
            whitening = of(cls, gram)
            self.seen.append(whitening.kind)
            return whitening

        def recording_dtype(m, layer_dtype):
            chosen = dtype_of(m, layer_dtype)
            self.seen.append(chosen)
            return chosen

        monkeypatch.setattr(spectral.Whitening, "of", classmethod(recording_of))
        monkeypatch.setattr(decomposition, "spectral_dtype", recording_dtype)

    def take(self) -> list:
        seen, self.seen = self.seen, []
        return seen


def _compare(layer: nn.Module, st, choices: _Choices) -> None:
    dec = balf.decompose_layer(layer, st)
    chosen = choices.take()
    fast = layer_energies(layer, st)
    assert choices.take() == chosen, "same whitening and spectral dtype"
    reference = dec.energies()
    assert fast.dtype == F64 and fast.shape == reference.shape == (geometry_of(layer).max_rank,)
    assert fast[-1] == 1 and (fast[1:] >= fast[:-1]).all() and (fast >= 0).all()
    tolerance = spectral.F32_ENERGY_TOLERANCE if F32 in chosen else F64_TOLERANCE
    torch.testing.assert_close(fast, reference, rtol=0, atol=tolerance)


@pytest.mark.filterwarnings("ignore:the calibration inputs are all zero")
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize(("case", "make_layer", "make_x"), CASES, ids=IDS)
def test_layer_energies_equal_the_decompositions(
    case, make_layer, make_x, side, dtype, monkeypatch
):
    torch.manual_seed(0)
    layer, x = make_layer(dtype), make_x(dtype)
    st = balf.collect_statistics(layer, x, side=side, progress=False).layers[""]
    _compare(layer, st, _Choices(monkeypatch))


@pytest.mark.parametrize("side", ["input", "output"])
def test_a_wide_float32_layer_takes_the_float32_step_and_agrees(side, monkeypatch):
    """n = 256 with three directions 10⁴ above a decaying rest: the check accepts float32."""
    torch.manual_seed(3)
    layer = nn.Linear(256, 256, bias=False)
    x = _spread(1024, 256, 0.99, 1e4, F64)
    st = balf.collect_statistics(layer.double(), x, side=side, progress=False).layers[""]
    layer = layer.float()
    choices = _Choices(monkeypatch)
    _compare(layer, st, choices)
    layer_energies(layer, st)
    assert F32 in choices.take()


def test_plain_svd_energies_equal_the_decompositions():
    torch.manual_seed(1)
    for layer in (nn.Linear(12, 7, dtype=F64), nn.Conv2d(4, 6, 3, groups=2, dtype=F64)):
        torch.testing.assert_close(
            layer_energies(layer), balf.decompose_layer(layer).energies(), rtol=0, atol=1e-12
        )


@pytest.mark.filterwarnings("ignore:the calibration inputs are all zero")
def test_all_zero_outputs_have_unit_energy():
    layer = nn.Linear(5, 3, dtype=F64)
    with torch.no_grad():
        layer.weight.zero_()
    for side in ("input", "output"):
        st = balf.collect_statistics(
            layer, torch.randn(10, 5, dtype=F64), side=side, progress=False
        )
        assert torch.all(layer_energies(layer, st.layers[""]) == 1)


def test_mismatched_statistics_are_refused():
    layer = nn.Linear(6, 4)
    other = nn.Linear(5, 4)
    st = balf.collect_statistics(other, torch.randn(8, 5), side="input", progress=False)
    with pytest.raises(balf.StatisticsError):
        layer_energies(layer, st.layers[""])
