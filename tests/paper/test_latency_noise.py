"""The A/A latency test runs end to end on tiny models (no assertion on the machine's speed)."""

from __future__ import annotations

import json

import torch
from torch import nn

from balf_paper.experiments.benchmarks import latency_noise


def test_the_aa_test_writes_its_rows_and_table(tmp_path, monkeypatch):
    tiny = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    monkeypatch.setattr(latency_noise, "_subjects", lambda names: [("tiny", tiny, (3, 8, 8))])
    out = tmp_path / "aa"
    latency_noise.main(
        ["--batch-sizes", "1", "2", "--repeats", "2", "--rounds", "2", "--seconds", "0",
         "--out", str(out)]
    )  # fmt: skip
    data = json.loads(out.with_suffix(".json").read_text())
    assert len(data["rows"]) == 4  # 2 batch sizes × 2 estimators
    assert all(len(r["ratios"]) == 2 and all(v > 0 for v in r["ratios"]) for r in data["rows"])
    assert "load_average" in data["cpu_state_start"]
    assert "Within 5 % of the true ratio" in out.with_suffix(".md").read_text()
    assert torch.isfinite(torch.tensor([v for r in data["rows"] for v in r["ratios"]])).all()
