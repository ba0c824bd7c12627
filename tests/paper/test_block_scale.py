"""The scale benchmark (balf_paper.experiments.benchmarks.block_scale) end to end at a tiny size:
one
subprocess per strategy, JSON and Markdown written, stored runs kept on a rerun."""

from __future__ import annotations

import json

import pytest

from balf.errors import BALFError

pytest.importorskip("transformers", reason="transformers is not installed")


def test_block_scale_tiny(tmp_path):
    from balf_paper.experiments.benchmarks import block_scale

    out = tmp_path / "scale"
    argv = ["--sizes", "128x2:2", "--calib-len", "32", "--batch-size", "1", "--out", str(out)]
    stored = block_scale.main(argv)
    rows = {r["strategy"]: r for r in stored["runs"]}
    assert set(rows) == {"whole", "block"}
    for row in rows.values():
        assert row["hidden"] == 128 and row["blocks"] == 2 and row["calib_windows"] == 2
        assert row["weights_gb"] > 0 and row["forward_cpu_s"] > 0 and row["compress_cpu_s"] > 0
        assert row["layer_params_ratio"] <= 0.6 + 1e-9
    assert rows["block"]["timings"]["propagation_pass"] > 0
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["targets"] == block_scale.TARGETS
    assert "block by block" in out.with_suffix(".md").read_text()
    assert len(block_scale.main(argv)["runs"]) == 2  # kept, not rerun
    with pytest.raises(BALFError, match="HIDDENxBLOCKS"):
        block_scale.main(["--sizes", "big", "--out", str(out)])
