"""The documented results: the quickstart end to end, quoted tables in sync, results regenerable.

- ``scripts/fashion_mnist/quickstart.py`` runs end to end on fixture Fashion-MNIST (random
  weights) and writes JSON, figures and tables; ``--resume`` reuses every point.
- :mod:`balf_paper.experiments.render.readme` rewrites stale ``<!-- table: path -->`` blocks of
  README.md, docs/*.md and results/**/README.md (paths from the repository root) and names a
  missing file.
- The committed pages quote every committed table exactly, each study has a page listed in the
  results index, the README stays a front door (≤ 300 lines, its two set-up commands, three
  headline tables), and re-rendering the committed ``results.json`` files reproduces the
  committed tables byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _fixtures import load_script, write_fashion_mnist

from balf.errors import BALFError
from balf_paper.data import fashion_mnist
from balf_paper.experiments.render.readme import (
    documentation_files,
    find_blocks,
    main,
    stale_blocks,
    stale_documentation,
    sync_documentation,
    sync_readme,
    table_lines,
)
from balf_paper.experiments.render.tree import render_all

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


def _tree(root: Path, pages: dict[str, str]) -> Path:
    """A repository with one rendered table and the given pages (``{relative path: body}``)."""
    (root / "results" / "t").mkdir(parents=True)
    (root / "results" / "t" / "m.md").write_text(TABLE_MD)
    for name, body in pages.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"# x\n<!-- table: results/t/m.md -->\n{body}<!-- /table -->\n")
    return root


def test_the_documentation_is_the_readme_docs_and_every_results_readme(tmp_path: Path):
    pages = ["README.md", "docs/a.md", "results/README.md", "results/s/README.md"]
    root = _tree(tmp_path, {name: "" for name in [*pages, "docs/sub/no.md", "other/README.md"]})
    (root / "results" / "s" / "notes.md").write_text("not a page")
    assert [p.relative_to(root).as_posix() for p in documentation_files(root)] == sorted(pages)


def test_nested_pages_quote_paths_from_the_repository_root(tmp_path: Path):
    stale = "| Mode | 0.9 |\n|---|--:|\n| BALF | 0.99 |\n"
    root = _tree(tmp_path, {"README.md": table_lines(TABLE_MD), "results/s/README.md": stale,
                            "docs/a.md": ""})  # fmt: skip
    assert stale_documentation(root) == {"docs/a.md": ["results/t/m.md"],
                                         "results/s/README.md": ["results/t/m.md"]}  # fmt: skip
    assert main(["--check", str(root)]) == 1
    assert sync_documentation(root) == {"docs/a.md": ["results/t/m.md"],
                                        "results/s/README.md": ["results/t/m.md"]}  # fmt: skip
    assert stale_documentation(root) == {} and main(["--check", str(root)]) == 0
    assert "| BALF | 0.12 |" in (root / "results" / "s" / "README.md").read_text()


def test_a_missing_quoted_file_names_the_page(tmp_path: Path):
    root = _tree(tmp_path, {"docs/a.md": ""})
    (root / "results" / "t" / "m.md").unlink()
    with pytest.raises(BALFError, match=r"docs/a\.md quotes results/t/m\.md"):
        sync_documentation(root)


def test_committed_documentation_quotes_the_committed_tables():
    assert stale_documentation(REPO) == {}, "run: bash scripts/render_results.sh"
    quoted = {p.relative_to(REPO).as_posix(): find_blocks(p.read_text())
              for p in documentation_files(REPO)}  # fmt: skip
    assert len(quoted["README.md"]) == 3, "the README quotes three headline tables"
    assert sum(map(len, quoted.values())) >= 36


def test_every_study_has_a_page_in_the_results_index():
    index = (REPO / "results" / "README.md").read_text()
    studies = sorted(p.parent.name for p in (REPO / "results").glob("*/README.md"))
    assert {"cifar10-jpeg", "imagenet-samples", "calib-shift", "fashion-mnist", "language",
            "benchmarks", "objectives"} <= set(studies)  # fmt: skip
    for study in studies:
        assert f"]({study}/README.md)" in index, f"results/README.md does not list {study}"
        page = (REPO / "results" / study / "README.md").read_text()
        assert page.startswith("# "), f"results/{study}/README.md has no title"


def test_the_readme_is_a_front_door():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert "bash scripts/quickstart.sh" in text and "bash scripts/test.sh" in text
    pages = ("docs/usage.md", "docs/reproducing.md", "docs/architecture.md", "results/README.md")
    for page in pages:
        assert f"]({page})" in text, f"the README's map lacks {page}"


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
