"""scripts/imagenet/compare_block_by_block.py end to end on fixture ImageNet folders (random
MobileNetV2): both strategies give the same ranks, top-1 is recorded, reruns resume."""

from __future__ import annotations

import json

from _fixtures import load_script, write_imagenet


def test_compare_block_by_block_end_to_end(tmp_path):
    root = write_imagenet(tmp_path / "data", size=32)
    out = tmp_path / "bbb.json"
    argv = [
        "--dataset", "imagenet", "--model", "mobilenet_v2", "--random-weights",
        "--data-root", str(root), "--calib-size", "4", "--batch-size", "2",
        "--modes", "flops_auto", "--knobs", "0.8", "--out", str(out),
    ]  # fmt: skip
    script = load_script("imagenet/compare_block_by_block.py")
    stored = script.main(argv)
    points = {p["strategy"]: p for p in stored["points"]}
    assert set(points) == {"whole", "block"}
    assert points["whole"]["ranks"] == points["block"]["ranks"]
    assert points["block"]["blocks"][:2] == ["features.0", "features.1"]
    assert points["block"]["layer_flops_ratio"] <= 0.8 + 1e-9
    assert 0 <= points["block"]["top1"] <= 1 and "baseline" in stored
    saved = json.loads(out.read_text())
    assert saved["weights"] == "random-seed0" and len(saved["points"]) == 2
    assert len(script.main(argv)["points"]) == 2  # resumed, nothing added
