"""The paper's sweep runs the new allocation objectives and the layer-sequential refit end to end
on fixture data (a tiny CIFAR-10, JPEG release, in its real layout; random weights)."""

from __future__ import annotations

import json
from pathlib import Path

from _fixtures import tiny_sweep_args, write_cifar10_jpeg

from balf_paper.experiments.cli.main import main as experiments_main
from balf_paper.experiments.render.objectives import render_study
from balf_paper.experiments.render.tree import render_model


def test_sensitivity_log_energy_and_refit_sweeps_run_and_render(tmp_path: Path):
    root = write_cifar10_jpeg(tmp_path / "cifar10-jpeg", train=3, test=1)
    common = ["factorize", "--dataset", "cifar10-jpeg", *tiny_sweep_args(root, tmp_path, 16),
              "--knobs", "0.6"]  # fmt: skip
    experiments_main([*common, "--modes", "flops_auto_sensitivity", "flops_auto_log_energy",
                      "flops_auto_fisher", "flops_auto_damage", "flops_auto_selected"])  # fmt: skip
    experiments_main([*common, "--modes", "flops_auto", "--refit-beta", "1.0",
                      "--refit-samples", "8"])  # fmt: skip
    model_dir = tmp_path / "results" / "cifar10-jpeg" / "resnet20"
    for mode in ("flops_auto_sensitivity", "flops_auto_log_energy", "flops_auto+refit",
                 "flops_auto_fisher", "flops_auto_damage", "flops_auto_selected"):  # fmt: skip
        results = json.loads((model_dir / mode / "results.json").read_text())
        assert [p["knob"] for p in results["points"]] == ["original", 0.6]
        assert results["points"][1]["flops_ratio"] <= 0.6 + 0.1
    refit = json.loads((model_dir / "flops_auto+refit" / "results.json").read_text())
    assert refit["config"]["strategy"] == "refit"  # part of the sweep's identity
    assert refit["config"]["strategy_options"] == {"beta": 1.0, "samples": 8}
    assert refit["config"]["extra"]["strategy"]["type"] == "LayerSequential"
    assert refit["config"]["extra"]["strategy"]["refit"]["beta"] == 1.0
    render_model(model_dir, "cifar10-jpeg", "resnet20", formats=("png",))
    table = (model_dir / "tables" / "matched_flops.md").read_text()
    assert "sensitivity-weighted" in table and "refit" in table
    written = render_study(tmp_path / "results")
    study = (tmp_path / "results" / "objectives" / "tables" / "resnet20.md").read_text()
    assert written and "refit" in study and "log-energy" in study and "uncompressed" in study
    assert "damage curves" in study and "selected objective" in study
    selected = json.loads((model_dir / "flops_auto_selected" / "results.json").read_text())
    chosen = selected["points"][1]["objective"]["selection"]["chosen"]
    assert chosen in {"energy", "log_energy", "fisher", "damage"}
    costs = (tmp_path / "results" / "objectives" / "tables" / "resnet20_cost.md").read_text()
    assert "Fisher-weighted" in costs and "statistics" in costs
