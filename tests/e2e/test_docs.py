"""The code blocks of docs/usage.md and docs/block-by-block.md run as written (tiny models)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import balf.ranks.costs as costs

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _code(page: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.DOTALL)
    assert blocks, f"{page} has no python code block"
    return "\n".join(blocks)


@pytest.mark.parametrize("page", ["usage.md", "block-by-block.md"])
def test_the_code_blocks_run(page, monkeypatch):
    monkeypatch.setattr(costs, "_METRICS", dict(costs._METRICS))  # a toy metric, undone after
    exec(compile(_code(page), f"docs/{page}", "exec"), {"__name__": f"docs_{page}"})
