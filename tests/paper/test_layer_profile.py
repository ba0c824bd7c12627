"""Per-layer profile of a compression (rank, MACs, energy kept by depth) and its script."""

from __future__ import annotations

import json

import pytest
import torch
from _fixtures import load_script, tiny_sweep_args, write_imagenet_samples
from torch import nn

import balf
from balf.ranks.modes import mode_spec
from balf_paper.experiments.benchmarks.layer_profile import depth_summary, layer_role, layer_rows


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),  # stem
        nn.Conv2d(16, 64, 1),  # expand
        nn.Conv2d(64, 64, 3, padding=1, groups=64),  # depthwise
        nn.Conv2d(64, 16, 1),  # project
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 1000),
    )


def test_roles_by_type_and_shape():
    net = _net()
    roles = [layer_role(m, i == 0) for i, m in enumerate(net) if not isinstance(m, nn.Flatten)]
    assert roles == ["stem 3x3 s2", "expand 1x1", "depthwise 3x3", "project 1x1", "classifier"]


@pytest.mark.parametrize("ratio", [0.5, 0.9])
def test_rows_and_summary_add_up(ratio):
    torch.manual_seed(0)
    net = _net().eval()
    x = torch.randn(16, 3, 16, 16)
    small, report = balf.compress(net, [(x, torch.zeros(16))], mode_spec("flops_auto").make(ratio))
    rows = layer_rows(net, report)
    assert [r["name"] for r in rows] == [n for n in report.layers]  # model order
    assert [r["index"] for r in rows] == list(range(len(rows)))
    for r in rows:
        assert 0.0 <= r["energy_kept"] <= 1.0 + 1e-9
        assert r["macs_after"] <= r["macs_before"]
        assert r["factorized"] == (r["macs_after"] < r["macs_before"])
    summary = depth_summary(rows, parts=2)
    assert sum(s["macs_share"] for s in summary) == pytest.approx(1.0)
    kept = sum(r["macs_after"] for r in rows) / sum(r["macs_before"] for r in rows)
    assert kept == pytest.approx(report.layer_flops_ratio, rel=1e-6)
    assert kept <= ratio + 1e-9


def test_script_end_to_end_on_the_samples_fixture(tmp_path):
    root = tmp_path / "datasets"
    from balf_paper.data.imagenet_samples import layout_imagenet_samples

    layout_imagenet_samples(write_imagenet_samples(tmp_path / "shared"), root / "imagenet-samples")
    script = load_script("imagenet/layer_profile.py")
    args = tiny_sweep_args(root, tmp_path, calib_size=2)
    out = tmp_path / "profile"
    options = ["--ratios", "0.9", "--fold-bn", "--evaluate", "--out-dir", str(out)]
    script.main(["--dataset", "imagenet-samples", "--model", "mobilenet_v2", *args, *options])
    payload = json.loads((out / "flops_auto-foldbn.json").read_text())
    assert payload["fold_bn"] and payload["dataset"] == "imagenet-samples"
    assert "--ratios 0.9" in payload["command"]
    profile = payload["profiles"]["flops_auto 0.9 (BN folded)"]
    assert profile["eval_samples"] == 3 and 0.0 <= profile["accuracy"] <= 1.0
    rows = profile["rows"]
    assert len(rows) == 53  # 52 convs + classifier of MobileNetV2
    assert (out / "flops_auto-foldbn.png").is_file() and (out / "flops_auto-foldbn.md").is_file()
