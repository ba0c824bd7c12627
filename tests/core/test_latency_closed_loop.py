"""The latency closed loop (``balf.compress_to_latency``) on injected timings.

No assertion depends on the machine's timing: the table is injected and the measured
whole-model ratio comes from a deterministic stand-in (a biased function of the compressed
model's size), as the real one is a biased function of the allocation.
- The loop lands within the tolerance where the open loop (one allocation) misses.
- It returns the closest step, records every step, and stops at once when the first lands.
- An unreachable ratio is a BudgetError, as in the open loop.
- The secant step is bounded and stays within [lowest, 1].
- The real timing runs (a smoke test: finite, positive ratios; the injected table keeps the
  budget reachable whatever the machine's speed).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import balf
from balf.counting.flops import count_params
from balf.pipeline.latency_loop import LatencyFit, compress_to_latency, measured_latency_ratio
from balf.ranks.latency import LatencyTable, LayerLatency

WIDTHS = (32, 64, 64, 96, 64, 80, 64, 48, 64)


def _model() -> nn.Sequential:
    """Eight Linear layers (ReLU between): enough layers for a fine-grained allocation."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for d, k in zip(WIDTHS[:-1], WIDTHS[1:], strict=True):
        layers += [nn.Linear(d, k), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def _table(fixed: float = 0.5) -> LatencyTable:
    """Dense latency ∝ D·K, factorized ∝ 0.05 + r·(D+K), for every Linear of :func:`_model`."""
    layers = {}
    for i, (d, k) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:], strict=True)):
        ranks = list(range(1, min(d, k) + 1))
        lowrank = [0.05 + r * (d + k) / 1000 for r in ranks]
        layers[str(2 * i)] = LayerLatency(d * k / 1000, ranks, lowrank)
    return LatencyTable(layers, sum(v.dense for v in layers.values()) + fixed, {"batch_size": 4})


def _compressor(model: nn.Module) -> balf.Compressor:
    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(0))
    return balf.Compressor(model, x, latency=_table(), progress=False)


def _biased_timing(bias: float, scale: float):
    """A stand-in for the timing: ``bias + scale × params kept`` (monotone in the budget)."""
    calls = []

    def measure(original, compressed, x):
        calls.append(x.shape[0])
        return bias + scale * count_params(compressed) / count_params(original)

    return measure, calls


@pytest.mark.parametrize(("bias", "scale"), [(0.12, 0.9), (-0.08, 1.1), (0.15, 0.7)])
@pytest.mark.parametrize("target", [0.8, 0.6])
def test_the_loop_lands_where_the_open_loop_misses(target, bias, scale):
    model = _model()
    measure, calls = _biased_timing(bias, scale)
    _, open_report = compress_to_latency(_compressor(model), target, iterations=1, measure=measure)
    open_error = abs(open_report.latency_fit["measured"][0] - target)
    small, report = compress_to_latency(
        _compressor(model), target, iterations=6, tolerance=0.02, measure=measure
    )
    fit = report.latency_fit
    landed = fit["measured"][fit["chosen"]]
    assert abs(landed - target) <= 0.02 * target or abs(landed - target) < open_error / 3
    assert abs(landed - target) <= open_error
    assert len(fit["requested"]) == len(fit["measured"]) == len(fit["predicted"]) <= 6
    assert set(calls) == {4}  # the table's batch size is what is timed
    assert report.ranks == {n: r.rank for n, r in report.layers.items()}
    assert abs(measure(model, small, torch.zeros(4, 32)) - landed) < 1e-12


def test_the_closest_step_is_returned_and_every_step_recorded():
    model = _model()
    measure, _ = _biased_timing(0.1, 1.0)
    _, report = compress_to_latency(
        _compressor(model), 0.7, iterations=3, tolerance=1e-9, measure=measure
    )
    fit = report.latency_fit
    errors = [abs(m - 0.7) for m in fit["measured"]]
    assert fit["chosen"] == errors.index(min(errors))
    assert fit["target"] == 0.7 and fit["batch_size"] == 4 and fit["seconds"] >= 0
    assert fit["requested"][0] == 0.7  # the first step is the open loop


def test_a_first_step_within_tolerance_stops_the_loop():
    measure, _ = _biased_timing(0.0, 1.0)
    _, report = compress_to_latency(
        _compressor(_model()), 0.7, iterations=5, tolerance=1.0, measure=measure
    )
    assert len(report.latency_fit["measured"]) == 1


def test_an_unreachable_ratio_is_a_budget_error():
    measure, _ = _biased_timing(0.0, 1.0)
    with pytest.raises(balf.BudgetError, match="ratio"):
        compress_to_latency(_compressor(_model()), 0.05, measure=measure)


@pytest.mark.parametrize("bad", [{"ratio": 0.0}, {"ratio": 1.5}, {"iterations": 0}])
def test_invalid_options_are_clear_errors(bad):
    options = {"ratio": 0.7, **bad}
    ratio = options.pop("ratio")
    with pytest.raises(balf.BALFError, match="ratio|iterations"):
        compress_to_latency(_compressor(_model()), ratio, **options)


@pytest.mark.parametrize(
    ("requested", "measured", "expected"),
    [
        ([0.7], [0.8], 0.6),  # first step: slope 1
        ([0.7, 0.6], [0.8, 0.75], 0.5),  # secant slope 0.5: 0.6 + (0.7 − 0.75)/0.5
        ([0.7, 0.6], [0.8, 0.8], 0.6 - 0.1 / 0.25),  # flat: slope clamped to 0.25 → 0.2
        ([0.95], [0.5], 1.0),  # clamped at 1
    ],
)
def test_secant_steps_are_bounded(requested, measured, expected):
    fit = LatencyFit(target=0.7, requested=requested, measured=measured)
    assert fit.next_request(lowest=0.01) == pytest.approx(max(min(expected, 1.0), 0.01))


def test_the_real_timing_runs_on_a_tiny_model():
    """The timing itself (no assertion on the machine's speed beyond sanity)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64)).eval()
    x = torch.randn(8, 64)
    ratio = measured_latency_ratio(model, model, x, rounds=3, min_time=0.0)
    assert math.isfinite(ratio) and ratio > 0
    small, report = compress_to_latency(
        _compressor(_model()), 0.8, iterations=2, rounds=2, min_time=0.0
    )
    fit = report.latency_fit
    assert all(math.isfinite(m) and m > 0 for m in fit["measured"])
    # one record per compression made, the one kept the closest to the target
    assert len(fit["measured"]) == len(fit["requested"]) == len(fit["predicted"])
    errors = [abs(m - 0.8) for m in fit["measured"]]
    assert errors[fit["chosen"]] == min(errors)


def test_a_budget_short_of_the_full_cost_by_rounding_keeps_every_rank():
    """A keep-ratio of 1 reaches the allocator as (T − F)/S, which rounding can put a few ulps
    under 1: when no rank is cheaper than dense, that must not be a BudgetError."""
    import numpy as np

    from balf.ranks.allocation import allocate

    costs = [np.array([0.3, 0.3, 0.3]), np.array([0.1 + 0.2, 0.3])]  # 0.1 + 0.2 ≠ 0.3
    energies = [np.array([0.5, 0.9, 1.0]), np.array([0.7, 1.0])]
    allocation = allocate(energies, costs, 1 - 1e-15, 50)
    assert allocation.ranks == [3, 2]
