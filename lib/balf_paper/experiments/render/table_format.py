"""Tables as text: booktabs LaTeX and GitHub Markdown, written atomically.

Tables are :class:`pandas.DataFrame` objects of numbers (``NaN`` where there is no value)
until they are formatted here:

- LaTeX through ``DataFrame.to_latex`` (booktabs rules ``\\toprule``/``\\midrule``/
  ``\\bottomrule``). Since pandas 2 ``to_latex`` renders through ``Styler``, which needs
  ``jinja2``; jinja2 is not a direct dependency of balf but a dependency of torch, so it is
  always installed with it.
- Markdown through the small :func:`to_markdown` below (``DataFrame.to_markdown`` needs
  ``tabulate``, which balf does not depend on).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from balf.io.atomic import atomic_write_text
from balf_paper.experiments.sweep.points import finite

__all__ = ["to_latex", "to_markdown", "write_table"]


def _formatted(df: pd.DataFrame, digits: int, missing: str) -> pd.DataFrame:
    """``df`` with numbers as strings of ``digits`` decimals and ``missing`` for NaN."""

    def cell(v: Any) -> str:
        if isinstance(v, str):  # already formatted, e.g. "1.23 ± 0.45"
            return v
        return missing if finite(v) is None else f"{v:.{digits}f}"

    return df.apply(lambda col: col.map(cell))


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "≤": r"$\leq$",
    "–": "--",
    "±": r"$\pm$",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def to_latex(
    df: pd.DataFrame, caption: str | None = None, label: str | None = None, digits: int = 2
) -> str:
    """A booktabs LaTeX table (``tabular`` in a ``table`` when ``caption``/``label`` are given).

    Numbers get ``digits`` decimals, ``NaN`` becomes ``--`` (an en dash in LaTeX), cells and
    headers are escaped.
    """
    text = _formatted(df, digits, "--")
    return text.to_latex(
        escape=True,
        column_format="l" + "r" * len(df.columns),
        caption=_latex_escape(caption) if caption else None,
        label=label,
        position="htbp" if caption or label else None,
    )


def to_markdown(df: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub-flavoured Markdown pipe table (numbers right-aligned, ``NaN`` as "–")."""
    text = _formatted(df, digits, "–")

    def cells(values: Iterable[Any]) -> str:
        return "| " + " | ".join(str(v).replace("|", r"\|") for v in values) + " |"

    lines = [
        cells([df.columns.name or "", *text.columns]),
        "|" + "---|" + "--:|" * len(text.columns),
    ]
    lines += [cells(row) for row in text.itertuples(index=True)]
    return "\n".join(lines) + "\n"


def write_table(
    df: pd.DataFrame,
    stem: str | Path,
    caption: str | None = None,
    label: str | None = None,
    digits: int = 2,
) -> list[Path]:
    """Write ``<stem>.tex`` and ``<stem>.md`` atomically; return both paths."""
    stem = Path(stem)
    tex, md = stem.with_name(stem.name + ".tex"), stem.with_name(stem.name + ".md")
    atomic_write_text(to_latex(df, caption, label, digits), tex)
    heading = f"{caption}\n\n" if caption else ""
    atomic_write_text(heading + to_markdown(df, digits), md)
    return [tex, md]
