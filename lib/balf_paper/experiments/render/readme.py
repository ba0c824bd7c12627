"""Keep the documentation's result tables equal to the rendered Markdown tables they quote.

The documentation is ``README.md``, ``docs/*.md`` and every ``results/**/README.md``
(:func:`documentation_files`). A quoted table in any of them is a block

.. code-block:: markdown

    <!-- table: results/fashion-mnist/resnet20/tables/matched_flops.md -->
    | Mode | 0.9 | ... |
    |---|--:| ... |
    ...
    <!-- /table -->

whose body is the Markdown table (the ``|`` lines, without the caption) of the named file,
which :mod:`balf_paper.experiments.render.tree` writes from the ``results.json`` files. The path is
relative to the repository root, whichever file quotes it. :func:`sync_documentation` rewrites
every block of every documentation file from its file; :func:`stale_documentation` lists the
blocks that differ (the tests run it on the committed files). ``python -m
balf_paper.experiments.render.readme [--check] [ROOT]`` does either from the command line.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from balf.errors import BALFError
from balf.io.atomic import atomic_write_text

__all__ = [
    "DOCUMENTATION",
    "TableBlock",
    "documentation_files",
    "find_blocks",
    "stale_blocks",
    "stale_documentation",
    "sync_documentation",
    "sync_readme",
    "table_lines",
]

DOCUMENTATION = ("README.md", "docs/*.md", "results/**/README.md")
"""Glob patterns, relative to the repository root, of the files whose tables are kept in sync."""

_BLOCK = re.compile(
    r"^<!-- table: (?P<path>\S+) -->\n(?P<body>.*?)^<!-- /table -->$", re.MULTILINE | re.DOTALL
)


@dataclass(frozen=True)
class TableBlock:
    """One quoted table: the file it quotes and the page's text between the markers."""

    path: str
    body: str
    span: tuple[int, int]  # character span of ``body`` in the page's text


def find_blocks(text: str) -> list[TableBlock]:
    """Every ``<!-- table: ... -->`` block of a page, in order."""
    return [TableBlock(m["path"], m["body"], m.span("body")) for m in _BLOCK.finditer(text)]


def table_lines(markdown: str) -> str:
    """The table of a rendered ``.md`` file: its ``|`` lines, newline-terminated."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return "".join(line + "\n" for line in lines)


def documentation_files(repo_root: Path) -> list[Path]:
    """The files of :data:`DOCUMENTATION` under ``repo_root`` that exist, sorted.

    Example:
        >>> [p.name for p in documentation_files(Path("."))][:1]  # doctest: +SKIP
        ['README.md']
    """
    root = Path(repo_root)
    found = {p for pattern in DOCUMENTATION for p in root.glob(pattern) if p.is_file()}
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _quoted(block: TableBlock, repo_root: Path, where: str = "README") -> str:
    source = repo_root / block.path
    if not source.is_file():
        raise BALFError(
            f"{where} quotes {block.path}, which does not exist; render it first "
            f"(bash scripts/render_results.sh) or fix the path in {where}"
        )
    table = table_lines(source.read_text())
    if not table:
        raise BALFError(f"{block.path} holds no Markdown table")
    return table


def stale_blocks(readme: Path, repo_root: Path | None = None) -> list[str]:
    """Paths of the blocks of ``readme`` whose text differs from the table they quote.

    Quoted paths are relative to ``repo_root`` (default: the folder of ``readme``).
    """
    readme = Path(readme)
    root = readme.parent if repo_root is None else Path(repo_root)
    text = readme.read_text()
    return [b.path for b in find_blocks(text) if b.body != _quoted(b, root, str(readme))]


def sync_readme(readme: Path, repo_root: Path | None = None) -> list[str]:
    """Rewrite every quoted table of ``readme`` from its file; return the paths that changed.

    Quoted paths are relative to ``repo_root`` (default: the folder of ``readme``); the file is
    rewritten (atomically) only when a table changed.
    """
    readme = Path(readme)
    root = readme.parent if repo_root is None else Path(repo_root)
    text = readme.read_text()
    changed: list[str] = []
    pieces, last = [], 0
    for block in find_blocks(text):
        table = _quoted(block, root, str(readme))
        if table != block.body:
            changed.append(block.path)
        pieces += [text[last : block.span[0]], table]
        last = block.span[1]
    pieces.append(text[last:])
    if changed:
        atomic_write_text("".join(pieces), readme)
    return changed


def stale_documentation(repo_root: Path) -> dict[str, list[str]]:
    """``{file: [quoted paths]}`` of each documentation file with a stale block (relative paths)."""
    root = Path(repo_root)
    files = documentation_files(root)
    stale = {f.relative_to(root).as_posix(): stale_blocks(f, root) for f in files}
    return {name: paths for name, paths in stale.items() if paths}


def sync_documentation(repo_root: Path) -> dict[str, list[str]]:
    """Rewrite the quoted tables of every documentation file; ``{file: [changed paths]}``."""
    root = Path(repo_root)
    files = documentation_files(root)
    changed = {f.relative_to(root).as_posix(): sync_readme(f, root) for f in files}
    return {name: paths for name, paths in changed.items() if paths}


def main(argv: Sequence[str] | None = None) -> int:
    """Sync (or with ``--check`` only list) the quoted tables of the documentation files."""
    parser = argparse.ArgumentParser(
        prog="python -m balf_paper.experiments.render.readme",
        description="Rewrite the <!-- table: path --> blocks of README.md, docs/*.md and "
        "results/**/README.md from the rendered tables they quote.",
    )
    parser.add_argument("root", nargs="?", default=".", help="repository root (default: .)")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 when a block is stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_documentation(Path(args.root))
        for name, paths in stale.items():
            print(f"{name}: stale {', '.join(paths)}")
        return 1 if stale else 0
    changed = sync_documentation(Path(args.root))
    for name, paths in changed.items():
        print(f"{name}: updated {', '.join(paths)}")
    print("quoted tables updated:", sum(map(len, changed.values())) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
