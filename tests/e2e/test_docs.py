"""The documentation runs and points where it says: README.md, docs/*.md, results/**/README.md.

- Every ``python`` block runs as written (the blocks of one page in order, in one namespace, in a
  temporary folder, registrations undone afterwards), unless the line before its fence says
  ``<!-- code: not run (reason) -->`` or ``<!-- code: run by tests/...py -->``; a test named so
  exists and reads that page.
- Every relative link resolves to a file of the repository, and its ``#anchor`` (if any) to a
  heading of that file (GitHub's anchors).
- Every repository path written in backticks (``lib/...``, ``scripts/...``, ``configs/...``,
  ``tests/...``, ``docs/...``) exists, so a moved module cannot leave a page pointing nowhere.

The pages are the ones whose quoted tables :mod:`balf_paper.experiments.readme` keeps in sync.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from balf_paper.experiments.readme import documentation_files

REPO = Path(__file__).resolve().parents[2]
PAGES = [p.relative_to(REPO).as_posix() for p in documentation_files(REPO)]

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_MARKER = re.compile(r"<!-- code: (not run \(.+\)|run by (\S+)) -->\s*$")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
_CODE_PATH = re.compile(r"`((?:lib|scripts|configs|tests|docs)/[^`\s]+)`")


@dataclass(frozen=True)
class CodeBlock:
    page: str
    line: int
    code: str
    marker: str | None  # None: run here; "not run (...)"; "run by <test>"
    run_by: str | None


def _blocks(page: str) -> list[CodeBlock]:
    text = (REPO / page).read_text()
    out = []
    for m in _FENCE.finditer(text):
        if m.group(1) != "python":
            continue
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _MARKER.search(before)
        line = text[: m.start()].count("\n") + 1
        what, test = (marker.group(1), marker.group(2)) if marker else (None, None)
        out.append(CodeBlock(page, line, m.group(2), what, test))
    return out


def _prose(text: str) -> str:
    """The text outside fenced blocks (links and paths in code are not checked)."""
    return _FENCE.sub("", text)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(path.read_text()).splitlines():
        m = re.match(r"^#{1,6} (.+?)\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def test_the_documentation_is_every_page():
    assert "README.md" in PAGES and "docs/usage.md" in PAGES and "results/README.md" in PAGES
    studies = {p for p in PAGES if p.startswith("results/") and p != "results/README.md"}
    assert len(studies) >= 7, studies


@pytest.fixture
def registries():
    """Registrations a page makes (a toy metric, layer kind, mode) are undone afterwards."""
    from balf.layers import kind
    from balf.ranks import costs, modes
    from balf.ranks.objectives import base as objectives
    from balf_paper.experiments import modes as displays

    held = [
        kind._BY_TYPE, kind._BY_NAME, modes._REGISTRY, modes._CLASSES, costs._METRICS,
        objectives._OBJECTIVES, displays._DISPLAYS, displays._SWEEP_VALUES,
    ]  # fmt: skip
    saved = [dict(r) for r in held]
    yield
    for registry, old in zip(held, saved, strict=True):
        registry.clear()
        registry.update(old)


RUN_HERE = [p for p in PAGES if any(b.marker is None for b in _blocks(p))]


@pytest.mark.parametrize("page", RUN_HERE)
def test_the_code_blocks_run(page, registries, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # pages that save files write them here
    namespace = {"__name__": f"docs_{Path(page).stem}"}
    for block in _blocks(page):
        if block.marker is None:
            exec(compile(block.code, f"{page} (line {block.line})", "exec"), namespace)


@pytest.mark.parametrize("page", PAGES)
def test_blocks_not_run_here_say_why(page):
    for block in _blocks(page):
        if block.run_by is not None:
            test = REPO / block.run_by
            assert test.is_file(), f"{page}:{block.line} names {block.run_by}, which is missing"
            assert page in test.read_text(), f"{block.run_by} does not read {page}"


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    source = REPO / page
    broken = []
    for m in _LINK.finditer(_prose(source.read_text())):
        target = m.group(1) or m.group(2)
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        file = (source.parent / path).resolve() if path else source
        if not file.exists() or REPO not in file.parents:
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"{page}: {broken}"


@pytest.mark.parametrize("page", PAGES)
def test_repository_paths_exist(page):
    missing = []
    for m in _CODE_PATH.finditer(_prose((REPO / page).read_text())):
        path = m.group(1).rstrip(".,;:)")
        if re.search(r"[<{*…]|\.\.\.", path):
            continue  # a pattern, not a path
        if not (REPO / path).exists():
            missing.append(path)
    assert not missing, f"{page} names paths that do not exist: {missing}"


def test_the_site_lists_every_page():
    """mkdocs.yml's navigation holds every docs/ page (none left unreachable on the site)."""
    import yaml

    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    listed = {next(iter(entry.values())) for entry in config["nav"]}
    assert listed == {p.name for p in (REPO / "docs").glob("*.md")}


def test_the_site_builds_offline_from_the_docstrings(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    import subprocess
    import sys

    site = tmp_path / "site"
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    api = (site / "api" / "index.html").read_text()
    for name in ("balf.compress", "balf.Compressor", "balf.BALFConfig", "balf.BlockByBlock"):
        assert f'id="{name}"' in api, f"{name} is missing from the API page"
