"""Rendering the ImageNet-samples results: compact networks' keep-ratios, the samples' name,
and a dataset's own compression-time benchmark."""

from __future__ import annotations

import json
from pathlib import Path

from balf_paper.experiments.render.tree import COMPACT_MODEL_TARGETS, render_all


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _sweep(model: str, mode: str) -> dict:
    points = [{"knob": "original", "accuracy": 0.79, "loss": 1.0, "flops_ratio": 1.0,
               "params_ratio": 1.0, "ranks": {}}]  # fmt: skip
    for r in (0.7, 0.75, 0.8, 0.9, 0.97):
        points.append({"knob": r, "accuracy": 0.79 * r**4, "loss": 1.0, "flops_ratio": r,
                       "params_ratio": r, "ranks": {}})  # fmt: skip
    config = {"dataset": "imagenet-samples", "model": model, "mode": mode,
              "knobs": [0.7, 0.75, 0.8, 0.9, 0.97], "calib_size": 1000, "seed": 0,
              "n_iters": 300, "eval_size": None, "extra": {}}  # fmt: skip
    return {"config": config, "environment": {"device": "cpu"}, "points": points}


def test_compact_models_use_the_paper_mobilenet_ratios(tmp_path):
    root = tmp_path / "results"
    for model in ("mobilenet_v2_q8", "resnet18"):
        for mode in ("flops_auto", "uniform"):
            _write(root / "imagenet-samples" / model / mode / "results.json", _sweep(model, mode))
    _write(
        root / "imagenet-samples" / "benchmarks" / "compression_time.json",
        {"rows": [{"model": "mobilenet_v2_q8", "mode": "flops_auto", "ratio": 0.9, "total": 3.0}]},
    )
    render_all(root, formats=("png",))
    compact = (root / "imagenet-samples/mobilenet_v2_q8/tables/matched_flops.md").read_text()
    header = next(line for line in compact.splitlines() if line.startswith("| Mode"))
    assert header.split("|")[2:-1] == [f" {t:g} " for t in COMPACT_MODEL_TARGETS]
    assert "ImageNet samples (1,300 val / 1,000 train images)" in compact
    other = (root / "imagenet-samples/resnet18/tables/matched_flops.md").read_text()
    assert "| 0.6 |" in next(line for line in other.splitlines() if line.startswith("| Mode"))
    bench = (root / "imagenet-samples/benchmarks/compression_time.md").read_text()
    assert "on ImageNet samples (1,300 val / 1,000 train images)" in bench
