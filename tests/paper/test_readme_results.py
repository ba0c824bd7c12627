"""The README's results: the quickstart end to end, quoted tables in sync, results regenerable.

- ``scripts/fashion_mnist/quickstart.py`` runs end to end on fixture Fashion-MNIST (random
  weights) and writes JSON, figures and tables; ``--resume`` reuses every point.
- :mod:`balf_paper.experiments.readme` rewrites stale ``<!-- table: path -->`` blocks and names a
  missing file.
- The committed README quotes every committed table exactly, and re-rendering the committed
  ``results.json`` files reproduces the committed tables byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _fixtures import load_script, write_fashion_mnist

from balf.errors import BALFError
from balf_paper.data import fashion_mnist
from balf_paper.experiments.readme import find_blocks, stale_blocks, sync_readme, table_lines
from balf_paper.experiments.render import render_all

REPO = Path(__file__).resolve().parents[2]
QUICKSTART_MODES = ("flops_auto", "energy", "energy_act_aware", "uniform")


# --- quickstart ---------------------------------------------------------------------------------


def test_quickstart_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    root = write_fashion_mnist(tmp_path / "data")
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "no-system-copy")
    monkeypatch.setattr(fashion_mnist, "LOCAL_DIR", tmp_path / "no-local-copy")
    script = load_script("fashion_mnist/quickstart.py")
    argv = [
        "--random-weights",
        *("--data-root", str(root), "--calib-size", "8", "--eval-size", "6"),
        *("--batch-size", "8", "--workers", "0", "--no-progress"),
        *("--out-root", str(tmp_path / "results"), "--cache-root", str(tmp_path)),
        *("--ratios", "0.5", "0.8"),
        *("--energy-thresholds", "0.9"),
        *("--energy-act-aware-thresholds", "0.9", "0.99"),
    ]
    script.main(argv)
    out = tmp_path / "results" / "fashion-mnist" / "resnet20"
    knobs = {"flops_auto": [0.5, 0.8], "energy": [0.9], "energy_act_aware": [0.9, 0.99]}
    knobs["uniform"] = [0.5, 0.8]
    for mode in QUICKSTART_MODES:
        results = json.loads((out / mode / "results.json").read_text())
        assert [p["knob"] for p in results["points"]] == ["original", *knobs[mode]]
    figures = {p.name for p in (out / "figures").iterdir()}
    assert figures == {f"accuracy_vs_{q}.{e}" for q in ("flops", "params") for e in ("png", "pdf")}
    tables = {p.name for p in (out / "tables").iterdir()}
    assert tables == {f"{t}.{e}" for t in ("matched_flops", "matched_params", "points")
                      for e in ("md", "tex")}  # fmt: skip
    printed = capsys.readouterr().out
    assert "| flops_auto | 0.5 |" in printed and "| BALF (FLOPs budget) |" in printed

    # --resume keeps every point (nothing recomputed: the JSON files are not rewritten)
    stamps = {m: (out / m / "results.json").stat().st_mtime_ns for m in QUICKSTART_MODES}
    script.main([*argv, "--resume"])
    assert stamps == {m: (out / m / "results.json").stat().st_mtime_ns for m in QUICKSTART_MODES}


# --- README table blocks ------------------------------------------------------------------------

TABLE_MD = "Caption line.\n\n| Mode | 0.9 |\n|---|--:|\n| BALF | 0.12 |\n"


def _readme(tmp_path: Path, body: str) -> Path:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "m.md").write_text(TABLE_MD)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\ntext\n<!-- table: t/m.md -->\n{body}<!-- /table -->\n\nafter\n")
    return readme


def test_table_lines_drop_the_caption():
    assert table_lines(TABLE_MD) == "| Mode | 0.9 |\n|---|--:|\n| BALF | 0.12 |\n"


def test_sync_rewrites_a_stale_block_and_keeps_the_rest(tmp_path: Path):
    readme = _readme(tmp_path, "| Mode | 0.9 |\n|---|--:|\n| BALF | 0.99 |\n")
    assert stale_blocks(readme) == ["t/m.md"]
    assert sync_readme(readme) == ["t/m.md"]
    text = readme.read_text()
    assert "| BALF | 0.12 |" in text and "0.99" not in text
    assert text.startswith("# x\n\ntext\n") and text.endswith("<!-- /table -->\n\nafter\n")
    assert stale_blocks(readme) == []
    stamp = readme.stat().st_mtime_ns
    assert sync_readme(readme) == []  # nothing to change: the file is not rewritten
    assert readme.stat().st_mtime_ns == stamp


def test_sync_fills_an_empty_block(tmp_path: Path):
    readme = _readme(tmp_path, "")
    assert sync_readme(readme) == ["t/m.md"]
    assert [b.body for b in find_blocks(readme.read_text())] == [table_lines(TABLE_MD)]


def test_a_quoted_file_that_is_missing_is_named(tmp_path: Path):
    readme = _readme(tmp_path, "")
    (tmp_path / "t" / "m.md").unlink()
    with pytest.raises(BALFError, match=r"t/m\.md.*render_results"):
        sync_readme(readme)


# --- the committed README and results -----------------------------------------------------------


def test_committed_readme_quotes_the_committed_tables():
    blocks = find_blocks((REPO / "README.md").read_text())
    assert len(blocks) >= 4, "the README's result tables should be quoted blocks"
    assert stale_blocks(REPO / "README.md") == [], "run: bash scripts/render_results.sh"


def _copy_results(dst: Path) -> Path:
    """The committed results tree without checkpoints, figures and tables (inputs only)."""
    src = REPO / "results"
    skip = shutil.ignore_patterns("checkpoints", "figures", "tables", "*.pt")
    for sub in ("fashion-mnist", "quickstart"):
        if (src / sub).is_dir():
            shutil.copytree(src / sub, dst / sub, ignore=skip)
    return dst


def test_committed_tables_regenerate_from_the_committed_results(tmp_path: Path):
    root = _copy_results(tmp_path / "results")
    written = render_all(root, formats=("pdf",), other_works=None)
    tables = [p for p in written if p.suffix in (".md", ".tex")]
    assert len(tables) >= 6
    for path in tables:
        committed = REPO / "results" / path.relative_to(root)
        assert committed.is_file(), f"{committed} is not committed"
        assert path.read_text() == committed.read_text(), f"{committed} is stale"
