"""First-order (Fisher) sensitivity estimates: they agree with the measured probes where the
second-order expansion is exact, cost one forward and one backward pass whatever the number of
layers, and leave the model as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import balf
from balf.errors import BALFError
from balf.pipeline.sensitivity import measure_sensitivities
from balf.pipeline.sensitivity_fisher import (
    estimate_fisher_sensitivities,
    fisher_damage,
    output_seed,
)
from balf.ranks.configs import BALFConfig, config_for_mode
from balf.ranks.objectives import (
    DamageObjective,
    FisherSensitivityObjective,
    SensitivityObjective,
    damage_curve,
    probe_rank,
)


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 6)
    ).eval()


class _TokenModel(nn.Module):
    """A per-token language model: logits ``(B, L, V)``, no mixing between positions."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 12)
        self.up = nn.Linear(12, 16)
        self.down = nn.Linear(16, 20)

    def forward(self, ids):
        return self.down(torch.tanh(self.up(self.embed(ids))))


def _both(model, data, keep, samples, batch_size=512):
    compressor = balf.Compressor(model, data, progress=False, batch_size=batch_size)
    cands = compressor.candidates(True)
    args = (model, cands, compressor.targets, compressor.aliases, compressor.decompositions(True))
    probe = SensitivityObjective(probe_keep=keep, probe_samples=samples)
    fisher = FisherSensitivityObjective(probe_keep=keep, probe_samples=samples)
    kw = {"batch_size": batch_size, "progress": False}
    return measure_sensitivities(*args, data, probe, **kw), estimate_fisher_sensitivities(
        *args, data, fisher, **kw
    )


def test_estimate_agrees_with_the_probes_on_small_truncations():
    """Where a truncation loses little, the KL is its second-order expansion, and the estimate
    (random labels from the model's softmax, 4,096 samples) is the probes' weight."""
    x = torch.randn(4096, 12)
    probe, fisher = _both(_classifier(), x, keep=0.97, samples=None)
    for name in probe:
        assert fisher[name] == pytest.approx(probe[name], rel=0.15), name


@pytest.mark.parametrize("batch_size", [64, 16], ids=["one batch", "four batches"])
def test_token_rows_agree_with_the_probes(batch_size):
    """Logits with a row per token: one seed per token and the token rows squared apiece, which
    is exact for a model that mixes no positions — from the first batch on (its rows are known
    only once the model's output is)."""
    ids = torch.randint(0, 20, (64, 32))
    probe, fisher = _both(_TokenModel(), ids, keep=0.97, samples=None, batch_size=batch_size)
    assert set(probe) == {"up", "down"}
    for name in probe:
        assert fisher[name] == pytest.approx(probe[name], rel=0.15), name


def test_relative_error_outputs_agree_with_the_probes():
    """A model returning an embedding (3-D, not logits): Gaussian seeds, ``‖Jδ‖² / ‖y‖²`` per
    batch as the probes' relative error."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8)).eval()
    x = torch.randn(256, 16, 8)
    probe, fisher = _both(model, x, keep=0.9, samples=None, batch_size=32)
    for name in probe:
        assert fisher[name] == pytest.approx(probe[name], rel=0.2), name


def test_one_forward_pass_per_batch_whatever_the_number_of_layers():
    model, x = _classifier(), torch.randn(64, 12)
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(1))
    compressor = balf.Compressor(model, x, progress=False, batch_size=16)
    cands = compressor.candidates(True)
    args = (model, cands, compressor.targets, compressor.aliases, compressor.decompositions(True))
    calls.clear()
    estimate_fisher_sensitivities(
        *args, x, FisherSensitivityObjective(probe_samples=32), batch_size=16, progress=False
    )
    assert len(calls) == 2  # two batches of 16
    calls.clear()
    measure_sensitivities(
        *args, x, SensitivityObjective(probe_samples=32), batch_size=16, progress=False
    )
    assert len(calls) == 2 * (1 + len(cands))


def test_the_model_ends_as_it_started_even_under_no_grad():
    model, x = _classifier(), torch.randn(64, 12)
    model[0].weight.requires_grad_(False)  # the caller's choices are kept
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    with torch.no_grad():
        small, report = balf.compress(
            model, x, BALFConfig(0.6, "params", objective="fisher"), progress=False
        )
    assert report.objective["type"] == "fisher"
    assert set(report.objective["weights"]) == {"0", "2", "4"}
    assert all(np.isfinite(w) and w > 0 for w in report.objective["weights"].values())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_seeds():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, 4)
    s = output_seed(logits, "kl", g)
    assert s.shape == logits.shape
    assert torch.allclose(s.sum(-1), torch.zeros(5, 7), atol=1e-6)  # onehot − p
    assert ((s > 0).sum(-1) == 1).all()  # the drawn label
    r = output_seed(logits, "relative_error", g)
    assert r.shape == logits.shape and torch.isfinite(r).all()


def test_estimates_are_cached_apart_from_the_probes(tmp_path):
    model, x = _classifier(), torch.randn(64, 12)
    weights = {}
    for mode in ("params_auto_sensitivity", "params_auto_fisher"):
        cache = balf.Cache(tmp_path)
        _, first = balf.compress(model, x, config_for_mode(mode, 0.6), cache=cache, progress=False)
        _, again = balf.compress(
            model, x, config_for_mode(mode, 0.6), cache=balf.Cache(tmp_path), progress=False
        )
        assert again.objective["weights"] == first.objective["weights"]
        weights[mode] = first.objective["weights"]
    assert weights["params_auto_sensitivity"] != weights["params_auto_fisher"]
    assert (
        len(list((tmp_path / "activation-cache").glob("sensitivities*"))) >= 2
        or len(list((tmp_path / "activation-cache").glob("*.pt"))) >= 3
    )


# -- damage curves ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_damage_curve_through_the_points_and_non_decreasing(seed):
    rng = np.random.default_rng(seed)
    p = int(rng.integers(1, 5))
    points = np.stack([rng.uniform(0.01, 0.9, p), rng.uniform(0.0, 3.0, p)], axis=1)
    lost = np.linspace(0.0, 1.0, 101)
    curve = damage_curve(points, lost)
    assert curve[0] == 0.0 and np.all(np.diff(curve) >= -1e-12) and np.all(curve >= 0)
    order = np.argsort(points[:, 0])
    running = np.maximum.accumulate(points[order, 1])  # made non-decreasing
    assert np.allclose(damage_curve(points, points[order, 0]), running)
    last_x, last_y = points[order, 0][-1], running[-1]
    beyond = damage_curve(points, np.array([1.0]))[0]
    assert beyond >= last_y + (1.0 - last_x) * last_y / last_x - 1e-9  # at least the mean slope


def test_damage_points_agree_with_the_probes_at_each_truncation():
    """Each estimated point is the KL the probe measures with the layer truncated there (small
    truncations, where the expansion holds)."""
    model, x = _classifier(), torch.randn(4096, 12)
    compressor = balf.Compressor(model, x, progress=False, batch_size=512)
    cands = compressor.candidates(True)
    decs = compressor.decompositions(True)
    keeps = (0.9, 0.97)
    damage = fisher_damage(model, cands, compressor.targets, decs, x, keeps, samples=None,
                           batch_size=512)  # fmt: skip
    for keep in keeps:
        probe = measure_sensitivities(
            model, cands, compressor.targets, compressor.aliases, decs, x,
            SensitivityObjective(probe_keep=keep, probe_samples=None), batch_size=512,
            progress=False,
        )  # fmt: skip
        for cand in cands:
            rank = probe_rank(cand, keep)
            lost = 1 - float(cand.energies[rank - 1])
            (point,) = [pt for pt in damage[cand.name] if pt[0] == pytest.approx(lost)]
            assert point[1] == pytest.approx(probe[cand.name] * lost, rel=0.15)


def test_damage_objective_compresses_within_budget_and_reports_its_points(tmp_path):
    model, x = _classifier(), torch.randn(128, 12)
    config = BALFConfig(0.5, "params", objective=DamageObjective((0.25, 0.5), 64))
    small, report = balf.compress(model, x, config, cache=balf.Cache(tmp_path), progress=False)
    assert report.achieved <= report.budget * (1 + 1e-12)
    assert set(report.objective["damage"]) == {"0", "2", "4"}
    candidates = balf.Compressor(model, x, progress=False).candidates(True)
    for cand in candidates:
        # one point per distinct probe rank, at the energy that rank loses
        ranks = sorted({probe_rank(cand, k) for k in (0.25, 0.5)})
        lost = [1 - float(cand.energies[r - 1]) for r in ranks]
        points = report.objective["damage"][cand.name]
        assert [p[0] for p in points] == pytest.approx(lost)
        assert all(d >= 0 for _, d in points)
    _, again = balf.compress(model, x, config, cache=balf.Cache(tmp_path), progress=False)
    assert again.objective["damage"] == report.objective["damage"]  # from the cache
    assert config_for_mode("flops_auto_damage", 0.5).objective == DamageObjective()


@pytest.mark.parametrize(
    "kwargs", [{"probe_keeps": ()}, {"probe_keeps": (0.5, 1.0)}, {"probe_keeps": 0.5},
               {"probe_samples": 0}, {"divergence": "l1"}],  # fmt: skip
)
def test_bad_damage_settings(kwargs):
    with pytest.raises(BALFError):
        DamageObjective(**kwargs)


def test_every_measuring_objective_reads_a_dataloader_through_the_cache(tmp_path):
    """Probes, first-order weights, damage points and the selection each read the calibration
    data again; a DataLoader read once for a cache key's fingerprint must still give every
    sample to each of them (it was a one-shot iterable after the first fingerprint)."""
    x = torch.randn(64, 12)
    loader = torch.utils.data.DataLoader(x, batch_size=16)
    model = _classifier()
    compressor = balf.Compressor(model, loader, cache=balf.Cache(tmp_path), progress=False)
    reports = {}
    for mode in ("params_auto_sensitivity", "params_auto_fisher", "params_auto_damage",
                 "params_auto_selected"):  # fmt: skip
        _, reports[mode] = compressor.compress(config_for_mode(mode, 0.5))
    assert reports["params_auto_selected"].objective["selection"]["chosen"]
    plain = balf.Compressor(model, x, progress=False, batch_size=16)
    _, again = plain.compress(config_for_mode("params_auto_fisher", 0.5))
    assert again.objective["weights"] == pytest.approx(
        reports["params_auto_fisher"].objective["weights"]
    )
