"""The example of docs/transformers.md ("A complete example"), run exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import balf

PAGE = Path(__file__).resolve().parents[2] / "docs" / "transformers.md"


def _section_code() -> str:
    text = PAGE.read_text()
    section = text.split("## A complete example\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "expected one python block in the section"
    return blocks[0]


def test_the_example_runs_and_round_trips(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_section_code(), "docs/transformers.md (A complete example)", "exec"), namespace)
    small, again, report = namespace["small"], namespace["again"], namespace["report"]
    assert report.skipped["lm_head"] == "excluded by exclude='lm_head'"
    assert any(name.endswith("self_attn.q_proj") for name in report.layers)
    assert report.layer_flops_ratio <= 0.6 + 1e-9
    assert (tmp_path / "llama-balf" / "model.safetensors").is_file()  # the transformers way
    ids = namespace["batches"][0]["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, small(ids).logits)
    assert balf.model_spec(again)["layers"] == balf.model_spec(small)["layers"]
