"""Allocation objectives: the allocator meets every budget whatever it maximises, each objective
computes what it says, sensitivity weights are measured as documented, and configs round-trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import balf
from balf.errors import BALFError, BudgetError
from balf.layers.geometry import LayerGeometry
from balf.pipeline.sensitivity import measure_sensitivities, output_divergence
from balf.ranks.configs import BALFConfig, config_for_mode, config_from_dict
from balf.ranks.costs import LayerCandidate, LayerCost
from balf.ranks.objectives import (
    DamageObjective,
    EnergyObjective,
    FisherSensitivityObjective,
    LogEnergyObjective,
    LogSensitivityObjective,
    Objective,
    SelectedObjective,
    SensitivityObjective,
    objective_named,
    probe_rank,
    register_objective,
)


def _candidates(seed: int, n: int = 6) -> list[LayerCandidate]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        d, k = (int(v) for v in rng.integers(4, 24, size=2))
        geo = LayerGeometry(kind="linear", groups=1, in_dim=d, out_dim=k)
        gains = np.sort(rng.uniform(0.01, 1.0, geo.max_rank))[::-1]
        energies = np.cumsum(gains) / gains.sum()
        energies[-1] = 1.0
        weight = float(rng.uniform(0.01, 10.0))
        lost = np.sort(rng.uniform(0.01, 1.0, 3))
        damage = np.stack([lost, np.cumsum(rng.uniform(0.0, 5.0, 3))], axis=1)  # (3, 2)
        out.append(LayerCandidate(f"l{i}", LayerCost(geo, float(rng.integers(1, 50))), energies,
                                  weight, damage))  # fmt: skip
    return out


@register_objective
@dataclasses.dataclass(frozen=True)
class _SquareRoot(Objective):
    """A user-defined objective: the square root of the kept energy."""

    name = "test_square_root"

    def values(self, candidate):
        return np.sqrt(candidate.energies)


OBJECTIVES = [EnergyObjective(), LogEnergyObjective(), SensitivityObjective(),
              LogSensitivityObjective(), FisherSensitivityObjective(), DamageObjective(),
              _SquareRoot()]  # fmt: skip


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o.name)
@pytest.mark.parametrize("metric", ["flops", "params"])
@pytest.mark.parametrize("multiple", [1, 4])
@pytest.mark.parametrize("seed", range(4))
def test_every_objective_meets_every_budget(objective, metric, multiple, seed):
    candidates = _candidates(seed)
    total = sum(c.cost.dense(metric) for c in candidates)
    cheapest = sum(
        c.cost.curve(metric)[min(multiple, c.cost.geometry.max_rank) - 1] for c in candidates
    )
    for ratio in (0.2, 0.45, 0.7, 0.95):
        config = BALFConfig(ratio, metric=metric, rank_multiple=multiple, objective=objective)
        if cheapest > ratio * total:
            with pytest.raises(BudgetError, match="use a ratio"):
                config.select_ranks(candidates)
            continue
        ranks, allocation = config.select_ranks(candidates)
        cost = sum(c.cost.curve(metric)[r - 1] for c, r in zip(candidates, ranks, strict=True))
        assert cost <= ratio * total * (1 + 1e-12)
        assert allocation.cost == pytest.approx(cost)
        for c, r in zip(candidates, ranks, strict=True):
            assert r % multiple == 0 or r == c.cost.geometry.max_rank


def test_objective_values():
    cand = _candidates(0)[0]
    assert np.array_equal(EnergyObjective().values(cand), cand.energies)
    assert np.allclose(LogEnergyObjective().values(cand), np.log(cand.energies))
    assert np.allclose(SensitivityObjective().values(cand), cand.weight * cand.energies)
    zero = dataclasses.replace(cand, energies=np.array([0.0, 1.0]))
    assert np.isfinite(LogEnergyObjective().values(zero)).all()  # log 0 is floored, selectable


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o.name)
def test_allocation_maximises_the_objective_at_its_multiplier(objective):
    """Each layer's rank maximises ``v(r) − λ·c(r)/total`` for the objective's own values at
    the allocator's multiplier (the Lagrangian optimum of that objective, not the paper's)."""
    for seed in range(6):
        candidates = _candidates(seed, n=4)
        for ratio in (0.3, 0.5, 0.8):
            ranks, alloc = BALFConfig(ratio, "params", objective=objective).select_ranks(
                candidates
            )
            for c, r in zip(candidates, ranks, strict=True):
                score = objective.values(c) - alloc.lam * c.cost.curve("params") / alloc.total
                assert score[r - 1] == pytest.approx(score.max(), abs=1e-9)
            assert alloc.energy == pytest.approx(
                sum(objective.values(c)[r - 1] for c, r in zip(candidates, ranks, strict=True))
            )


def test_weights_change_the_allocation_towards_sensitive_layers():
    candidates = _candidates(3)
    base, _ = BALFConfig(0.4, "params", objective="sensitivity").select_ranks(
        [dataclasses.replace(c, weight=1.0) for c in candidates]
    )
    heavy = [dataclasses.replace(c, weight=1000.0 if c.name == "l0" else 1.0) for c in candidates]
    ranks, _ = BALFConfig(0.4, "params", objective="sensitivity").select_ranks(heavy)
    assert ranks[0] >= base[0]
    assert ranks[0] == candidates[0].cost.geometry.max_rank or ranks[0] > base[0]


@pytest.mark.parametrize(
    "objective",
    [EnergyObjective(), LogEnergyObjective(),
     SensitivityObjective(0.3, 16, "kl", "probe", {"a": 2.0}),
     FisherSensitivityObjective(probe_samples=8), DamageObjective((0.3, 0.6), 16, "kl"),
     _SquareRoot()],  # fmt: skip
    ids=lambda o: o.name,
)
def test_configs_round_trip(objective):
    config = BALFConfig(0.5, "params", objective=objective)
    assert config_from_dict(config.to_dict()) == config
    assert config_from_dict(config.to_dict()).objective == objective
    if isinstance(objective, EnergyObjective):  # the paper's: dicts as before objectives
        assert "objective" not in config.to_dict()
        assert config.mode == "params_auto"
    else:
        assert config.mode == f"params_auto_{objective.name}"


def test_modes_and_names():
    assert config_for_mode("flops_auto_sensitivity", 0.5).objective == SensitivityObjective()
    assert config_for_mode("params_auto_log_energy", 0.5).objective == LogEnergyObjective()
    fisher = config_for_mode("params_auto_fisher", 0.5).objective
    assert fisher == FisherSensitivityObjective() and fisher.estimator == "fisher"
    assert fisher.to_dict()["type"] == "fisher"  # the mode's name
    old = {**fisher.to_dict(), "type": "fisher_sensitivity"}  # its former name still reads
    assert config_from_dict({**BALFConfig(0.5).to_dict(), "objective": old}).objective == fisher
    assert BALFConfig(0.5).objective == EnergyObjective()  # the paper's is the default
    assert objective_named("test_square_root") == _SquareRoot()


@pytest.mark.parametrize(
    "bad",
    ["nope", 3, {"type": "nope"}],
)
def test_unknown_objective_is_a_clear_error(bad):
    with pytest.raises(BALFError, match="objective"):
        BALFConfig(0.5, objective=bad)


@pytest.mark.parametrize(
    "kwargs",
    [{"probe_keep": 1.0}, {"probe_keep": 0}, {"probe_samples": 0}, {"divergence": "l2"},
     {"weights": {"a": float("nan")}}, {"weights": {"a": -1.0}},
     {"estimator": "grad"}],  # fmt: skip
)
def test_bad_sensitivity_settings(kwargs):
    with pytest.raises(BALFError):
        SensitivityObjective(**kwargs)


# -- measured sensitivities ------------------------------------------------------------------------


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 5)
    ).eval()


def test_weights_are_the_divergence_per_lost_energy():
    """Each weight equals, recomputed by hand, the KL of the model with that layer alone
    truncated to its probe rank, divided by the energy the truncation loses; the model ends
    unchanged."""
    model, x = _mlp(), torch.randn(64, 12)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dense_out = model(x)
    compressor = balf.Compressor(model, x, progress=False)
    _, report = compressor.compress(BALFConfig(0.6, "params", objective="sensitivity"))
    weights = report.objective["weights"]
    assert report.timings["sensitivity"] > 0
    decs = compressor.decompositions(True)
    for cand in compressor.candidates(True):
        rank = probe_rank(cand, 0.5)
        small = balf.factorize_layer(model.get_submodule(cand.name), decs[cand.name], rank)
        probed = _mlp()
        probed.set_submodule(cand.name, small)
        kl = output_divergence(torch.log_softmax(dense_out, -1), probed(x), "kl")
        assert weights[cand.name] == pytest.approx(kl / (1 - cand.energies[rank - 1]), rel=1e-5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert torch.equal(model(x), dense_out)


def test_given_weights_are_used_and_nothing_is_measured():
    model, x = _mlp(), torch.randn(32, 12)
    weights = {"0": 1.0, "2": 5.0, "4": 0.5}
    _, report = balf.compress(
        model, x, BALFConfig(0.6, "params", objective=SensitivityObjective(weights=weights)),
        progress=False,
    )  # fmt: skip
    assert report.objective["weights"] == weights
    assert "sensitivity" not in report.timings
    with pytest.raises(BALFError, match="no entry"):
        balf.compress(model, x, BALFConfig(0.6, "params", objective=SensitivityObjective(
            weights={"0": 1.0})), progress=False)  # fmt: skip


def test_relative_error_for_outputs_that_are_not_logits():
    """A model returning a 3-D tensor (an embedding) is judged by relative error; the probe
    uses only the first ``probe_samples`` samples."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8)).eval()
    x = torch.randn(10, 4, 8)
    compressor = balf.Compressor(model, x, progress=False, batch_size=3)
    cands = compressor.candidates(True)
    objective = SensitivityObjective(probe_samples=5)
    weights = measure_sensitivities(
        model, cands, compressor.targets, compressor.aliases, compressor.decompositions(True),
        x, objective, batch_size=3, progress=False,
    )  # fmt: skip
    decs = compressor.decompositions(True)
    cand = cands[0]
    rank = probe_rank(cand, 0.5)
    probed = nn.Sequential(
        balf.factorize_layer(model[0], decs["0"], rank), model[1], model[2]
    ).eval()
    ref = model(x[:5])
    err = float((probed(x[:5]) - ref).square().sum() / ref.square().sum())
    # the probe batches are 3 + 2 samples: the mean over batches of each batch's error
    per_batch = [
        float((probed(b) - model(b)).square().sum() / model(b).square().sum())
        for b in (x[:3], x[3:5])
    ]
    assert weights["0"] == pytest.approx(np.mean(per_batch) / (1 - cand.energies[rank - 1]))
    assert err > 0


def test_cache_keeps_measured_weights(tmp_path):
    model, x = _mlp(), torch.randn(32, 12)
    config = BALFConfig(0.6, "params", objective="sensitivity")
    cache = balf.Cache(tmp_path)
    _, first = balf.compress(model, x, config, cache=cache, progress=False)
    assert list((tmp_path / "activation-cache").glob("*.pt"))
    _, second = balf.compress(model, x, config, cache=balf.Cache(tmp_path), progress=False)
    assert second.objective["weights"] == first.objective["weights"]
    assert second.timings["sensitivity"] < first.timings["sensitivity"] + 1.0


def test_log_sensitivity_weights_are_calibrated_on_the_same_probe():
    """The log form's weight is the divergence per unit of ``−log e`` at the probe rank: the
    linear weight times ``(1 − e⁰)/(−log e⁰)``; its values are ``w · log e``."""
    model, x = _mlp(), torch.randn(64, 12)
    compressor = balf.Compressor(model, x, progress=False)
    _, lin = compressor.compress(BALFConfig(0.6, "params", objective="sensitivity"))
    _, log = compressor.compress(BALFConfig(0.6, "params", objective="log_sensitivity"))
    assert log.mode == "params_auto_log_sensitivity"
    assert "sensitivity" not in log.timings  # the probes ran once, for both objectives
    for cand in compressor.candidates(True):
        e0 = cand.energies[probe_rank(cand, 0.5) - 1]
        factor = (1 - e0) / -np.log(e0)
        assert log.objective["weights"][cand.name] == pytest.approx(
            lin.objective["weights"][cand.name] * factor
        )
    cand = dataclasses.replace(_candidates(1)[0], weight=2.0)
    assert np.allclose(LogSensitivityObjective().values(cand), 2.0 * np.log(cand.energies))


# -- the selected objective ------------------------------------------------------------------------


def test_selected_objective_keeps_the_choice_that_diverges_least():
    """At every budget the chosen objective's allocation is the one whose truncated model
    changes the top class of the fewest calibration samples (ties: the lowest KL), recomputed
    by hand; the ranks are that choice's."""
    model, x = _mlp(), torch.randn(96, 12)
    compressor = balf.Compressor(model, x, progress=False)
    choices = ("energy", "log_energy", "fisher")
    selected = SelectedObjective(choices, samples=64)
    dense = torch.log_softmax(model(x[:64]), -1)
    decs = compressor.decompositions(True)
    for ratio in (0.3, 0.5, 0.8):
        small, report = compressor.compress(BALFConfig(ratio, "params", objective=selected))
        record = report.objective["selection"]
        assert set(record["divergence"]) == set(choices)
        by_hand = {}
        for name in choices:
            _, sub = compressor.compress(BALFConfig(ratio, "params", objective=name))
            probed = _mlp()
            for layer, lr in sub.layers.items():
                if lr.factorized:
                    probed.set_submodule(layer, balf.factorize_layer(
                        model.get_submodule(layer), decs[layer], lr.rank))  # fmt: skip
            out = probed(x[:64])
            kl = output_divergence(dense, out, "kl")
            differ = float((out.argmax(-1) != dense.argmax(-1)).float().mean())
            by_hand[name] = (differ, kl)
            assert record["divergence"][name] == pytest.approx(kl, rel=1e-4)
            assert record["disagreement"][name] == pytest.approx(differ)
        best = min(by_hand, key=by_hand.get)
        assert record["chosen"] == best
        _, chosen = compressor.compress(BALFConfig(ratio, "params", objective=best))
        assert {n: lr.rank for n, lr in report.layers.items()} == {
            n: lr.rank for n, lr in chosen.layers.items()
        }
        assert report.achieved <= report.budget * (1 + 1e-12)


def test_selected_objective_settings_and_round_trip():
    config = config_for_mode("params_auto_selected", 0.5)
    assert isinstance(config.objective, SelectedObjective)
    assert config_from_dict(config.to_dict()) == config
    custom = SelectedObjective(("energy", {"type": "damage", "probe_keeps": [0.5]}), samples=8)
    assert custom.choices[1] == DamageObjective((0.5,))
    for bad in ({"choices": ()}, {"choices": "energy"}, {"choices": ("selected",)},
                {"samples": 0}, {"divergence": "l1"}):  # fmt: skip
        with pytest.raises(BALFError):
            SelectedObjective(**bad)
    with pytest.raises(BALFError, match="prepared by its"):
        SelectedObjective().values(_candidates(0)[0])
