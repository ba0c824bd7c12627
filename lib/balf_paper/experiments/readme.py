"""Keep the README's result tables equal to the rendered Markdown tables they quote.

A quoted table in the README is a block

.. code-block:: markdown

    <!-- table: results/fashion-mnist/resnet20/tables/matched_flops.md -->
    | Mode | 0.9 | ... |
    |---|--:| ... |
    ...
    <!-- /table -->

whose body is the Markdown table (the ``|`` lines, without the caption) of the named file,
which :mod:`balf_paper.experiments.render` writes from the ``results.json`` files.
:func:`sync_readme` rewrites every block from its file; :func:`stale_blocks` lists the blocks
that differ (the tests run it on the committed README).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from balf.errors import BALFError
from balf.io.atomic import atomic_write_text

__all__ = ["TableBlock", "find_blocks", "stale_blocks", "sync_readme", "table_lines"]

_BLOCK = re.compile(
    r"^<!-- table: (?P<path>\S+) -->\n(?P<body>.*?)^<!-- /table -->$", re.MULTILINE | re.DOTALL
)


@dataclass(frozen=True)
class TableBlock:
    """One quoted table: the file it quotes and the README text between the markers."""

    path: str
    body: str
    span: tuple[int, int]  # character span of ``body`` in the README text


def find_blocks(text: str) -> list[TableBlock]:
    """Every ``<!-- table: ... -->`` block of a README, in order."""
    return [TableBlock(m["path"], m["body"], m.span("body")) for m in _BLOCK.finditer(text)]


def table_lines(markdown: str) -> str:
    """The table of a rendered ``.md`` file: its ``|`` lines, newline-terminated."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return "".join(line + "\n" for line in lines)


def _quoted(block: TableBlock, repo_root: Path) -> str:
    source = repo_root / block.path
    if not source.is_file():
        raise BALFError(
            f"README quotes {block.path}, which does not exist; render it first "
            "(bash scripts/render_results.sh) or fix the path in the README"
        )
    table = table_lines(source.read_text())
    if not table:
        raise BALFError(f"{block.path} holds no Markdown table")
    return table


def stale_blocks(readme: Path, repo_root: Path | None = None) -> list[str]:
    """Paths of the README blocks whose text differs from the table they quote."""
    readme = Path(readme)
    root = readme.parent if repo_root is None else Path(repo_root)
    return [b.path for b in find_blocks(readme.read_text()) if b.body != _quoted(b, root)]


def sync_readme(readme: Path, repo_root: Path | None = None) -> list[str]:
    """Rewrite every quoted table of ``readme`` from its file; return the paths that changed."""
    readme = Path(readme)
    root = readme.parent if repo_root is None else Path(repo_root)
    text = readme.read_text()
    changed: list[str] = []
    pieces, last = [], 0
    for block in find_blocks(text):
        table = _quoted(block, root)
        if table != block.body:
            changed.append(block.path)
        pieces += [text[last : block.span[0]], table]
        last = block.span[1]
    pieces.append(text[last:])
    if changed:
        atomic_write_text("".join(pieces), readme)
    return changed
