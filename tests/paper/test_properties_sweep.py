"""Sweep resume: a knob whose budget could not be met is remembered, not recomputed or repeated.

``run_sweep`` records a knob that raised :class:`balf.BudgetError` under ``skipped``. A rerun of the
same sweep — whole, or after ``stop_after`` — must compress only the knobs that have neither a
point nor a skip entry, and every knob must end up exactly once in ``points`` or ``skipped``.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from balf import Compressor
from balf_paper.experiments.sweep.runner import SweepConfig, run_sweep

TOO_SMALL = 0.01  # below the cost of rank 1 in every layer: a BudgetError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


@pytest.fixture
def compressed(monkeypatch) -> list[float]:
    """The knobs ``Compressor.compress`` is called with, in order."""
    calls: list[float] = []
    compress = Compressor.compress

    def counting(self, config, *args, **kwargs):
        calls.append(config.knob)
        return compress(self, config, *args, **kwargs)

    monkeypatch.setattr(Compressor, "compress", counting)
    return calls


def _sweep(out_dir, knobs, stop_after=None):
    x = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(8) % 4
    config = SweepConfig("synthetic", "tiny", "flops_auto", list(knobs), calib_size=len(x))
    return run_sweep(
        config,
        _model(),
        [x],
        [(x, labels)],
        out_dir,
        example_input=x[:1],
        progress=False,
        stop_after=stop_after,
        argv=["test"],
    )


def _knobs_once(results) -> list:
    """Every knob of the results, points and skips together (each must appear once)."""
    return [p["knob"] for p in results["points"]] + [s["knob"] for s in results["skipped"]]


def test_rerun_neither_recomputes_nor_repeats_a_skipped_knob(tmp_path, compressed):
    knobs = [TOO_SMALL, 0.6]
    first = _sweep(tmp_path, knobs)
    assert compressed == knobs
    assert [s["knob"] for s in first["skipped"]] == [TOO_SMALL]
    assert sorted(_knobs_once(first), key=str) == sorted(["original", *knobs], key=str)

    second = _sweep(tmp_path, knobs)
    assert compressed == knobs  # nothing compressed again
    stored = json.loads((tmp_path / "results.json").read_text())
    for results in (second, stored):
        assert results["skipped"] == first["skipped"]
        assert results["points"] == first["points"]


def test_resume_after_stop_after_keeps_one_skip_entry(tmp_path, compressed):
    knobs = [TOO_SMALL, 0.6, 0.8]
    _sweep(tmp_path, knobs, stop_after=1)  # the skip does not count as a point
    assert compressed == [TOO_SMALL, 0.6]
    results = _sweep(tmp_path, knobs)
    assert compressed == [TOO_SMALL, 0.6, 0.8]
    assert [s["knob"] for s in results["skipped"]] == [TOO_SMALL]
    assert [p["knob"] for p in results["points"]] == ["original", 0.6, 0.8]
    results = _sweep(tmp_path, [*knobs, 0.005])  # a new knob that is skipped too
    assert compressed == [TOO_SMALL, 0.6, 0.8, 0.005]
    assert [s["knob"] for s in results["skipped"]] == [TOO_SMALL, 0.005]
