"""The fast numerics of the decompositions keep the Eckart–Young optimum to a stated tolerance.

* float32 spectral step (``balf._spectral.spectral_dtype``): for float32 layers the activation
  error at every rank is within ``F32_ENERGY_TOLERANCE`` of the output energy of the float64
  Eckart–Young bound, and every energy ``e(r)`` within the same tolerance of the float64 one;
  float64 layers and spectra that fail the check stay in float64.
* Cholesky whitening: used for well-conditioned input Grams (same result as the eigen
  whitening), never for rank-deficient or ill-conditioned ones (condition check).
* ``decompose_layers``: layers reading the same input share one whitening, with results equal
  to ``decompose_layer``'s; the decomposition runs on the requested device.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import balf
import balf._spectral as spectral
from balf import factorize_layer
from balf.calibration.statistics import LayerStatistics
from balf.layers.dispatch import geometry_of, output_rows

F64 = torch.float64


def _spectrum_data(n_in: int, rows: int, decay: float, spike: float, seed: int) -> torch.Tensor:
    """``(rows, n_in)`` inputs with Gram eigenvalues ``decay**i`` (the top three × ``spike``)."""
    g = torch.Generator().manual_seed(seed)
    scales = decay ** torch.arange(n_in, dtype=F64)
    scales[:3] *= spike
    q, _ = torch.linalg.qr(torch.randn(n_in, n_in, dtype=F64, generator=g))
    return (torch.randn(rows, n_in, dtype=F64, generator=g) * scales.sqrt()) @ q.T


def _float32_layer(n_in: int, n_out: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out, bias=False)


def _true_sigma2(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """σ² of ``Y = X Wᵀ`` in float64 (the reference spectrum), ``(R,)``."""
    y = x @ layer.weight.detach().to(F64).T
    s2 = torch.linalg.svdvals(y).square()
    out = torch.zeros(geometry_of(layer).max_rank, dtype=F64)
    out[: min(len(s2), len(out))] = s2[: len(out)]
    return out


def _error(layer: nn.Module, dec: balf.LayerDecomposition, x: torch.Tensor, rank: int) -> float:
    """Activation error of the rank-``rank`` factors, evaluated in float64."""
    w = layer.weight.detach()
    a, b = dec.factors(w.T.unsqueeze(0), rank)
    w_hat = (a @ b)[0]
    return float((x @ (w.to(F64).T - w_hat)).square().sum())


SPECTRA = {
    "flat": (1.0, 1.0),
    "decaying": (0.97, 1.0),
    "fast-decay": (0.9, 1.0),
    "three-outliers-1e4": (0.99, 1e4),
}


@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize(("n_in", "n_out"), [(96, 160), (192, 128)], ids=["expanding", "narrowing"])
@pytest.mark.parametrize("spectrum", SPECTRA)
def test_float32_spectral_step_keeps_the_eckart_young_bound(spectrum, n_in, n_out, side):
    decay, spike = SPECTRA[spectrum]
    layer = _float32_layer(n_in, n_out, seed=1)
    x = _spectrum_data(n_in, 4 * n_in, decay, spike, seed=2)
    # float64 statistics (so that only the decomposition's precision is under test), decomposed
    # for the float32 layer and, as the reference, for the same weights in float64
    stats = balf.collect_statistics(layer.to(F64), x, side=side, progress=False).layers[""]
    ref = balf.decompose_layer(layer, stats)
    dec = balf.decompose_layer(layer.float(), stats)
    sigma2 = _true_sigma2(layer, x)
    total = float(sigma2.sum())
    tol = spectral.F32_ENERGY_TOLERANCE
    assert (dec.energies() - ref.energies()).abs().max() <= tol
    big_r = geometry_of(layer).max_rank
    for r in sorted({1, 4, big_r // 4, big_r // 2, 3 * big_r // 4, big_r - 1, big_r}):
        bound = float(sigma2[r:].sum())
        err = _error(layer, dec, x, r)
        assert err <= bound + tol * total, (spectrum, side, r, err, bound)


def test_the_float32_check_is_on_the_spectrum_and_float64_layers_stay_float64():
    n = 2048
    flat = torch.eye(n, dtype=F64).unsqueeze(0)
    spiky = torch.diag(torch.cat([torch.full((1,), 1e6), torch.ones(n - 1)])).to(F64)[None]
    assert spectral.spectral_dtype(flat, torch.float32) == torch.float32
    assert spectral.spectral_dtype(flat, torch.bfloat16) == torch.float32
    assert spectral.spectral_dtype(flat, F64) == F64
    # one direction with all the energy: the float32 floor 2·√n·eps·‖M‖_F is 1.08e-5 of tr(M)
    assert spectral.spectral_dtype(spiky, torch.float32) == F64


@pytest.mark.parametrize("spike", [1e2, 1e4, 1e6])
def test_float32_on_a_wide_spiky_spectrum_the_check_accepts(spike):
    """n = 1024, three directions ``spike`` times above a decaying rest (most of the energy):
    the check accepts float32, and the Eckart–Young excess and the energies stay within the
    tolerance (measured directly on ``Γ``: the output route's error is
    ``tr((I − V_r V_rᵀ) Γ (I − V_r V_rᵀ))``)."""
    n = 1024
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64, generator=g))
    s2 = 0.99 ** torch.arange(n, dtype=F64)
    s2[:3] *= spike
    gamma = ((q * s2) @ q.T)[None]
    layer = nn.Linear(n, n, bias=False)
    stats = LayerStatistics("output", gamma, rows=4 * n, calls=1)
    assert spectral.spectral_dtype(gamma, torch.float32) == torch.float32
    dec = balf.decompose_layer(layer, stats)
    total, tol = float(s2.sum()), spectral.F32_ENERGY_TOLERANCE
    e64 = s2.cumsum(0) / s2.sum()
    assert float((dec.energies() - e64).abs().max()) <= tol
    v = dec.basis[0]
    for r in (1, 3, 8, 64, 256, 512, 900, 1020):
        p = torch.eye(n, dtype=F64) - v[:, :r] @ v[:, :r].T
        err = float(torch.trace(p @ gamma[0] @ p))
        assert err <= float(s2[r:].sum()) + tol * total, (r, err)


def test_a_spectrum_failing_the_check_is_decomposed_in_float64(monkeypatch):
    layer = _float32_layer(24, 40, seed=3)
    x = _spectrum_data(24, 80, 0.9, 1.0, seed=4).float()
    stats = balf.collect_statistics(layer, x, side="output", progress=False).layers[""]
    used = []
    original = spectral.descending_eigh

    def spy(m, dtype=F64):
        used.append(dtype)
        return original(m, dtype)

    monkeypatch.setattr("balf.decomposition.descending_eigh", spy)
    balf.decompose_layer(layer, stats)
    monkeypatch.setattr(spectral, "F32_ENERGY_TOLERANCE", 1e-12)
    balf.decompose_layer(layer, stats)
    assert used == [torch.float32, F64]


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["float64", "float32"])
def test_full_rank_reproduces_the_dense_layer_through_cholesky_whitening(dtype):
    torch.manual_seed(0)
    layer = nn.Linear(16, 40, dtype=dtype)
    x = torch.randn(200, 16, dtype=dtype)
    stats = balf.collect_statistics(layer, x, side="input", progress=False).layers[""]
    assert spectral.Whitening.of(stats.gram).kind == "cholesky"
    small = factorize_layer(layer, balf.decompose_layer(layer, stats), 16)
    fresh = torch.randn(30, 16, dtype=dtype)
    tol = 1e-9 if dtype == F64 else 1e-4
    with torch.no_grad():
        torch.testing.assert_close(small(fresh), layer(fresh), rtol=tol, atol=tol)


def _gram(x: torch.Tensor) -> torch.Tensor:
    return (x.T @ x).unsqueeze(0)


def test_cholesky_and_eigen_whitening_give_the_same_decomposition(monkeypatch):
    torch.manual_seed(0)
    layer = nn.Linear(20, 50, dtype=F64)
    x = torch.randn(300, 20, dtype=F64)
    stats = balf.collect_statistics(layer, x, side="input", progress=False).layers[""]
    assert spectral.Whitening.of(stats.gram).kind == "cholesky"
    chol = balf.decompose_layer(layer, stats)
    monkeypatch.setattr(spectral, "CHOLESKY_MAX_CONDITION", 0.0)
    assert spectral.Whitening.of(stats.gram).kind == "eigen"
    eigen = balf.decompose_layer(layer, stats)
    torch.testing.assert_close(chol.sigma2, eigen.sigma2, rtol=1e-10, atol=0)
    w = layer.weight.detach().T.unsqueeze(0)
    for r in (1, 7, 20):
        a1, b1 = chol.factors(w, r)
        a2, b2 = eigen.factors(w, r)
        torch.testing.assert_close(x @ (a1 @ b1)[0], x @ (a2 @ b2)[0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "case",
    ["fewer-rows-than-D", "dead-channel", "duplicated-feature", "channel-1e-6", "well-conditioned"],
)
def test_the_condition_check_sends_ill_conditioned_grams_to_the_eigen_whitening(case):
    torch.manual_seed(0)
    x = torch.randn(200, 12, dtype=F64)
    if case == "fewer-rows-than-D":
        x = x[:5]
    elif case == "dead-channel":
        x[:, 4] = 0
    elif case == "duplicated-feature":
        x[:, 5] = x[:, 6]
    elif case == "channel-1e-6":
        x[:, 3] *= 1e-6  # condition ~10¹²
    kind = spectral.Whitening.of(_gram(x)).kind
    assert kind == ("cholesky" if case == "well-conditioned" else "eigen")


def test_condition_estimate_is_of_the_order_of_the_condition_number():
    torch.manual_seed(0)
    for kappa in (1e2, 1e6, 1e9):
        q, _ = torch.linalg.qr(torch.randn(64, 64, dtype=F64))
        lam = torch.logspace(0, -torch.log10(torch.tensor(kappa)).item(), 64, dtype=F64)
        c = ((q * lam) @ q.T).unsqueeze(0)
        est = spectral.condition_estimate(c, torch.linalg.cholesky(c))
        # never below the condition number by more than 2×; above by at most tr(C)/λ_max ≤ n
        assert kappa / 2 <= est <= 64 * kappa * 1.01, (kappa, est)


class _Block(nn.Module):
    """gate/up read the same input (an MLP), down reads their product."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Linear(12, 30)
        self.up = nn.Linear(12, 30)
        self.down = nn.Linear(30, 12)
        self.other = nn.Linear(12, 30)

    def forward(self, x):
        return self.down(self.gate(x) * self.up(x)) + self.other(2 * x).sum(-1, keepdim=True)


def test_layers_reading_the_same_input_share_one_whitening(monkeypatch):
    torch.manual_seed(0)
    model = _Block()
    x = torch.randn(100, 12)
    stats = balf.collect_statistics(model, x, progress=False)
    layers = {n: model.get_submodule(n) for n in ("gate", "up", "down", "other")}
    assert [stats.layers[n].side for n in layers] == ["input", "input", "output", "input"]
    calls = []
    original = spectral.Whitening.of.__func__

    def counted(cls, gram):
        calls.append(gram)
        return original(cls, gram)

    monkeypatch.setattr(spectral.Whitening, "of", classmethod(counted))
    together = balf.decompose_layers(layers, stats)
    assert len(calls) == 2  # gate+up once, other once (its input 2x is another tensor)
    for name, module in layers.items():
        alone = balf.decompose_layer(module, stats.layers[name])
        torch.testing.assert_close(together[name].sigma2, alone.sigma2, rtol=0, atol=0)
        torch.testing.assert_close(together[name].basis, alone.basis, rtol=0, atol=0)


def test_same_input_is_detected_by_identity_and_by_content():
    torch.manual_seed(0)
    model = _Block()
    x = torch.randn(50, 12)
    stats = balf.collect_statistics(model, x, progress=False)
    gate = stats.layers["gate"]
    shared = LayerStatistics("input", gate.gram, gate.rows, gate.calls, gate.output_shape)
    copied = LayerStatistics("input", gate.gram.clone(), gate.rows, gate.calls)
    nudged = LayerStatistics("input", gate.gram.clone(), gate.rows, gate.calls)
    nudged.gram[0, 0, 1] += 1e-12
    nudged.gram[0, 0, 2] -= 1e-12  # same sums, different content
    from balf.decomposition import _same_input_groups

    groups = _same_input_groups(
        ["a", "b", "c", "d"], {"a": gate, "b": shared, "c": copied, "d": nudged}
    )
    assert groups == {"a": ["a", "b", "c"]}


def test_decompositions_run_on_the_requested_device():
    torch.manual_seed(0)
    layer = nn.Linear(8, 20)
    stats = balf.collect_statistics(layer, torch.randn(40, 8), progress=False).layers[""]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        dec = balf.decompose_layers({"": layer}, {"": stats}, device=device)[""]
        assert dec.basis.device.type == device and dec.sigma2.device.type == device
        ref = balf.decompose_layer(layer, stats)
        torch.testing.assert_close(dec.energies().cpu(), ref.energies(), rtol=0, atol=1e-6)


def test_output_rows_helper_matches_reference():
    """Guard on the test's own reference: ``_true_sigma2`` is the spectrum of the outputs."""
    layer = _float32_layer(10, 6, seed=0).to(F64)
    x = torch.randn(30, 10, dtype=F64)
    with torch.no_grad():
        y = output_rows(layer, layer(x))
    torch.testing.assert_close(
        _true_sigma2(layer, x), torch.linalg.svdvals(y[0]).square(), rtol=1e-10, atol=1e-12
    )


def test_the_input_gram_of_a_tensor_read_by_several_layers_is_computed_once(monkeypatch):
    """Accumulation side of the sharing: one input Gram per call and tensor, same statistics."""
    import balf.calibration.accumulator as accumulator

    torch.manual_seed(0)
    model = _Block()
    x = torch.randn(60, 12)
    separate = balf.collect_statistics(model, x, progress=False, batch_size=20)
    calls = []
    original = accumulator.input_gram
    monkeypatch.setattr(accumulator, "input_gram", lambda *a: calls.append(a[0]) or original(*a))
    shared = balf.collect_statistics(model, x, progress=False, batch_size=20)
    # per batch: gate and up share one Gram (x), other has its own (2·x): 2 Grams, 3 batches
    assert len(calls) == 6 and {id(m) for m in calls} == {id(model.gate), id(model.other)}
    for name in ("gate", "up", "other", "down"):
        torch.testing.assert_close(shared.layers[name].gram, separate.layers[name].gram)
    assert torch.equal(shared.layers["gate"].gram, shared.layers["up"].gram)


def test_an_input_changed_in_place_between_readers_is_not_shared():
    class InPlace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(6, 20)
            self.b = nn.Linear(6, 20)

        def forward(self, x):
            x = x.clone()
            y = self.a(x)
            x.mul_(3)  # b reads the same tensor object, changed
            return y + self.b(x)

    torch.manual_seed(0)
    model = InPlace()
    x = torch.randn(30, 6)
    stats = balf.collect_statistics(model, x, progress=False)
    torch.testing.assert_close(
        stats.layers["b"].gram, 9 * stats.layers["a"].gram, rtol=1e-5, atol=0
    )


@pytest.mark.parametrize("d", [100, 300, 700])
def test_blocked_products_equal_the_plain_ones(d):
    """The panel products of the whitening (``Lᵀ M L``) and of ``W Wᵀ`` skip zero blocks and
    mirror the symmetric half: equal to the plain products."""
    from balf._spectral import _lt_m_l
    from balf.decomposition import _row_gram

    torch.manual_seed(0)
    x = torch.randn(2 * d, d, dtype=F64)
    chol = torch.linalg.cholesky((x.T @ x)[None])
    m = torch.randn(d, d, dtype=F64)
    m = (m + m.T)[None]
    ref = chol.transpose(1, 2) @ m @ chol
    torch.testing.assert_close(
        _lt_m_l(m, chol), ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max())
    )
    w = torch.randn(2, d, 3 * d)
    ref = w.to(F64) @ w.to(F64).transpose(1, 2)
    torch.testing.assert_close(_row_gram(w), ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))
