"""``--save-model DIR`` of the sweep scripts: chosen points saved with balf.save, reloadable.

The Fashion-MNIST factorize sweep on fixture data (random weights) with ``--save-knobs 0.6``
saves the 0.6 point only, under the run folder's path; the file reloads into a fresh
architecture with the point's ranks, and gives the accuracy recorded for the point.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from _experiments import experiment
from _fixtures import use_only_fixture_fashion_mnist, write_fashion_mnist

import balf
from balf_paper.data import make_loader
from balf_paper.experiments.tasks.image.data import experiment_data, experiment_model
from balf_paper.experiments.tasks.image.evaluation import evaluate


def test_save_model_saves_the_chosen_points(tmp_path, monkeypatch):
    root = write_fashion_mnist(tmp_path / "data")
    use_only_fixture_fashion_mnist(monkeypatch, tmp_path)
    script = experiment("factorize", "fashion-mnist")
    argv = [
        "--random-weights",
        *("--data-root", str(root), "--calib-size", "8", "--eval-size", "6"),
        *("--batch-size", "8", "--workers", "0", "--no-progress"),
        *("--out-root", str(tmp_path / "results"), "--cache-root", str(tmp_path)),
        *("--modes", "flops_auto", "--knobs", "0.6", "0.95"),
        *("--save-model", str(tmp_path / "saved"), "--save-knobs", "0.6"),
    ]
    script.main(argv)
    folder = tmp_path / "saved" / "fashion-mnist" / "resnet20" / "flops_auto"
    assert sorted(p.name for p in folder.iterdir()) == ["0.6.safetensors"]
    results = json.loads(
        (tmp_path / "results/fashion-mnist/resnet20/flops_auto/results.json").read_text()
    )
    point = next(p for p in results["points"] if p["knob"] == 0.6)
    assert Path(point["saved_model"]) == folder / "0.6.safetensors"
    assert all("saved_model" not in p for p in results["points"] if p["knob"] != 0.6)

    spec = balf.read_spec(folder / "0.6.safetensors")
    assert {e["name"]: e["rank"] for e in spec["layers"]} == {
        n: r for n, r in point["ranks"].items() if n in {e["name"] for e in spec["layers"]}
    }
    with torch.device("meta"):
        fresh, _ = experiment_model("fashion-mnist", "resnet20", pretrained=False, seed=7)
    model = balf.load(folder / "0.6.safetensors", fresh)
    data = experiment_data("fashion-mnist", root, "resnet20", 8, 0, 6)
    result = evaluate(model, make_loader(data.evaluation, 8, 0), "cpu", progress=False)
    assert result.accuracy == point["metrics"]["accuracy"]
