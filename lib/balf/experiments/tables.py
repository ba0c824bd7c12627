"""Results tables: read stored sweep results, tabulate them, write LaTeX and Markdown.

Everything here works from the ``results.json`` files the sweep runner writes
(:mod:`balf.experiments.sweep`) and from the compression-time benchmark JSON; nothing is
recomputed. Tables are :class:`pandas.DataFrame` objects of numbers (``NaN`` where there is no
value) until :func:`write_table` formats them:

- LaTeX through ``DataFrame.to_latex`` (booktabs rules ``\\toprule``/``\\midrule``/
  ``\\bottomrule``). Since pandas 2 ``to_latex`` renders through ``Styler``, which needs
  ``jinja2``; jinja2 is not a direct dependency of balf but a dependency of torch, so it is
  always installed with it.
- Markdown through the small :func:`to_markdown` below (``DataFrame.to_markdown`` needs
  ``tabulate``, which balf does not depend on).

**Matched-reduction rule** (:func:`best_point_within`): for a mode and a target keep-ratio ``t``
of a quantity (FLOPs or parameters, whole model, measured), the compared point is the one with
the **highest accuracy among the mode's compressed points whose measured ratio is ≤ t**
(``t + tol`` with ``tol = 1e-9`` against float noise); ties go to the smaller ratio. The
uncompressed ``"original"`` point never counts. When no point is that small the cell is empty
("–"). The drop is ``100 · (original accuracy − accuracy)`` in percentage points, against the
original accuracy stored in the same results file; positive numbers are losses.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import atomic_write_text
from ..errors import BALFError
from ..modes import registered_modes

__all__ = [
    "DEFAULT_TARGETS",
    "SPECIAL_DIRS",
    "best_point_within",
    "calibration_size_table",
    "compressed_points",
    "compression_time_table",
    "corruption_table",
    "load_benchmark_rows",
    "load_mode_results",
    "load_numbered_runs",
    "matched_reduction_table",
    "mode_label",
    "original_point",
    "to_latex",
    "to_markdown",
    "write_table",
]

log = logging.getLogger(__name__)

DEFAULT_TARGETS: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
"""Keep-ratios of the matched-reduction tables."""

SPECIAL_DIRS = frozenset({"calib-size", "n-iters", "corruption", "figures", "tables"})
"""Folders of a model directory that are not a mode's sweep."""

_PHASES = ("statistics", "decomposition", "allocation", "replacement")
_OPTIONAL_COLUMNS = {
    "forward": "Forward (s)",
    "total_over_forward": "Total / forward",
    "peak_memory_gb": "Peak memory (GB)",
    "peak_rss_increase_gb": "Peak RSS increase (GiB)",
    "peak_cuda_gb": "Peak CUDA memory (GiB)",
}


def mode_label(mode: str) -> str:
    """Display name of ``mode`` (declared with its config class; the name itself when unknown)."""
    spec = registered_modes().get(mode)
    return spec.display.label if spec is not None else mode


def _mode_sort_key(mode: str) -> tuple[int, str]:
    order = list(registered_modes())
    return (order.index(mode) if mode in order else len(order), mode)


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("skipping %s: %s", path, exc)
        return None


# --------------------------------------------------------------------------- loading


def load_mode_results(
    model_dir: str | Path, modes: Iterable[str] | None = None
) -> dict[str, dict[str, Any]]:
    """The ``<model_dir>/<mode>/results.json`` files, keyed by mode, in display order.

    Args:
        model_dir: ``results/<dataset>/<model>`` (or ``.../corruption``).
        modes: keep only these modes (default: every folder holding a ``results.json``,
            except :data:`SPECIAL_DIRS`).
    """
    model_dir = Path(model_dir)
    wanted = None if modes is None else set(modes)
    found: dict[str, dict[str, Any]] = {}
    if not model_dir.is_dir():
        return found
    for sub in model_dir.iterdir():
        path = sub / "results.json"
        if sub.name in SPECIAL_DIRS or not path.is_file():
            continue
        if wanted is not None and sub.name not in wanted:
            continue
        results = _read_json(path)
        if isinstance(results, dict) and results.get("points"):
            found[sub.name] = results
    return {m: found[m] for m in sorted(found, key=_mode_sort_key)}


def load_numbered_runs(parent: str | Path, prefix: str) -> dict[int, dict[str, Any]]:
    """``<parent>/<prefix><N>/results.json`` keyed by ``N``, ascending.

    Example: ``load_numbered_runs(model_dir / "calib-size", "calib")`` → ``{256: …, 512: …}``.
    """
    parent = Path(parent)
    runs: dict[int, dict[str, Any]] = {}
    if not parent.is_dir():
        return runs
    for sub in parent.iterdir():
        suffix = sub.name[len(prefix) :] if sub.name.startswith(prefix) else ""
        path = sub / "results.json"
        if not suffix.isdigit() or not path.is_file():
            continue
        results = _read_json(path)
        if isinstance(results, dict) and results.get("points"):
            runs[int(suffix)] = results
    return dict(sorted(runs.items()))


def load_benchmark_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of the compression-time benchmark JSON, whatever its top-level shape.

    Accepted: a list of rows; a mapping with a ``rows``/``results``/``models`` list; or a
    mapping ``{model: row}``. Each row is a mapping with at least ``model``; others are skipped.
    """
    data = _read_json(Path(path))
    if isinstance(data, dict):
        for key in ("rows", "results", "models"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            data = [{"model": name, **row} for name, row in data.items() if isinstance(row, dict)]
    if not isinstance(data, list):
        return []
    rows = [r for r in data if isinstance(r, dict) and r.get("model") is not None]
    if len(rows) < len(data):
        log.warning("%s: %d rows without a model name skipped", path, len(data) - len(rows))
    return rows


# --------------------------------------------------------------------------- points


def original_point(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The uncompressed model's point (knob ``"original"``) of a results dict, if any."""
    for p in results.get("points", []):
        if p.get("knob") == "original" and _num(p.get("accuracy")) is not None:
            return p
    return None


def compressed_points(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The compressed points (knob ≠ ``"original"``) that have an accuracy, in stored order."""
    return [
        p
        for p in results.get("points", [])
        if p.get("knob") != "original" and _num(p.get("accuracy")) is not None
    ]


def _num(value: Any) -> float | None:
    """``value`` as a finite float, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def best_point_within(
    points: Sequence[Mapping[str, Any]], quantity: str, target: float, tol: float = 1e-9
) -> Mapping[str, Any] | None:
    """The most accurate point whose ``<quantity>_ratio`` is ≤ ``target`` (module rule).

    Args:
        points: compressed points (``accuracy`` and ``flops_ratio``/``params_ratio``).
        quantity: ``"flops"`` or ``"params"``.
        target: keep-ratio (e.g. 0.6 = at most 60% of the original FLOPs).
        tol: slack against float noise in the measured ratios.

    Returns:
        The point, or ``None`` when no point is at or below ``target``. Ties in accuracy go to
        the smaller ratio.
    """
    key = f"{quantity}_ratio"
    eligible = [
        p
        for p in points
        if _num(p.get(key)) is not None
        and _num(p.get("accuracy")) is not None
        and p[key] <= target + tol
    ]
    if not eligible:
        return None
    return max(eligible, key=lambda p: (p["accuracy"], -p[key]))


# --------------------------------------------------------------------------- tables


def matched_reduction_table(
    results_by_mode: Mapping[str, Mapping[str, Any]],
    quantity: str,
    targets: Sequence[float] = DEFAULT_TARGETS,
) -> pd.DataFrame:
    """Accuracy drop (pp) of each mode at matched keep-ratios of ``quantity``.

    Returns:
        One row per mode (display names), one column per target (``"0.9"``, …); values are
        ``100 · (original − best accuracy with ratio ≤ target)``, ``NaN`` where no point
        qualifies or the mode has no original point. See :func:`best_point_within`.

    Example:
        >>> sweeps = load_mode_results("results/cifar10/resnet20")  # doctest: +SKIP
        >>> table = matched_reduction_table(sweeps, "flops")  # doctest: +SKIP
        >>> write_table(table, "tables/matched_flops")  # doctest: +SKIP
    """
    if quantity not in ("flops", "params"):
        raise BALFError(f"quantity must be 'flops' or 'params', not {quantity!r}")
    rows = {}
    for mode, results in results_by_mode.items():
        base = original_point(results)
        points = compressed_points(results)
        row = []
        for t in targets:
            best = best_point_within(points, quantity, t)
            ok = base is not None and best is not None
            row.append(100.0 * (base["accuracy"] - best["accuracy"]) if ok else math.nan)
        rows[mode_label(mode)] = row
    return _frame(rows, [f"{t:g}" for t in targets], "Mode")


def corruption_table(results_by_mode: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Accuracy (%) per corruption, mean over severities, of the original and compressed models.

    Args:
        results_by_mode: ``corruption/<mode>/results.json`` contents keyed by mode; points
            carry ``corrupted: {corruption: {severity: accuracy}}``.

    Returns:
        Rows ``clean``, one per corruption, then ``mean`` (over all corruptions and
        severities); columns ``original`` (from the first mode that has it) and
        ``<mode label> <knob>`` for every compressed point.
    """
    columns: dict[str, dict[str, float]] = {}
    corruptions: list[str] = []
    for mode, results in results_by_mode.items():
        base = original_point(results)
        entries = [] if base is None or "original" in columns else [("original", base)]
        entries += [(f"{mode_label(mode)} {p['knob']:g}", p) for p in compressed_points(results)]
        for name, point in entries:
            per = point.get("corrupted") or {}
            col = {"clean": 100.0 * point["accuracy"]}
            values = []
            for corruption, severities in per.items():
                accs = [a for a in map(_num, (severities or {}).values()) if a is not None]
                if corruption not in corruptions:
                    corruptions.append(corruption)
                if accs:
                    col[corruption] = 100.0 * sum(accs) / len(accs)
                    values += accs
            if values:
                col["mean"] = 100.0 * sum(values) / len(values)
            columns[name] = col
    index = ["clean", *corruptions, "mean"]
    rows = {i: [col.get(i, math.nan) for col in columns.values()] for i in index}
    return _frame(rows, list(columns), "Corruption")


def calibration_size_table(runs: Mapping[int, Mapping[str, Any]]) -> pd.DataFrame:
    """Accuracy (%) per calibration size (rows) and keep-ratio knob (columns).

    Args:
        runs: ``calib-size/calib<N>/results.json`` contents keyed by ``N``.

    Returns:
        Columns ``original`` then one per knob (``"0.4"``, …); ``NaN`` where a run lacks a point.
    """
    knobs: list[float] = []
    rows: dict[str, list[float]] = {}
    for results in runs.values():
        for p in compressed_points(results):
            if p["knob"] not in knobs:
                knobs.append(p["knob"])
    knobs.sort()
    for size, results in runs.items():
        base = original_point(results)
        by_knob = {p["knob"]: p["accuracy"] for p in compressed_points(results)}
        values = [base["accuracy"] if base else math.nan] + [
            by_knob.get(k, math.nan) for k in knobs
        ]
        rows[str(size)] = [100.0 * v for v in values]
    return _frame(rows, ["original", *(f"{k:g}" for k in knobs)], "Calibration images")


def compression_time_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Compression time per phase (s), total, forward time and peak memory per model.

    Rows as written by ``scripts/imagenet/measure_compression_time.py``: ``model``,
    ``phases: {phase: s}``, ``total``, and optionally ``forward``, ``total_over_forward`` and
    memory fields (``peak_memory_gb``, ``peak_rss_increase_gb``, ``peak_cuda_gb``). The four
    known phases always get a column, other phases follow alphabetically; optional fields get a
    column when some row has them. Missing or non-numeric values become ``NaN``.
    """
    extra_phases = sorted(
        {k for r in rows if isinstance(r.get("phases"), dict) for k in r["phases"]} - set(_PHASES)
    )
    phases = [*_PHASES, *extra_phases]
    optional = [k for k in _OPTIONAL_COLUMNS if any(_num(r.get(k)) is not None for r in rows)]
    columns = [f"{p.capitalize()} (s)" for p in phases] + ["Total (s)"]
    columns += [_OPTIONAL_COLUMNS[k] for k in optional]
    table = {}
    for r in rows:
        ph = r.get("phases") if isinstance(r.get("phases"), dict) else {}
        values = [_num(ph.get(p)) for p in phases] + [_num(r.get("total"))]
        values += [_num(r.get(k)) for k in optional]
        table[str(r["model"])] = [math.nan if v is None else v for v in values]
    return _frame(table, columns, "Model")


def _frame(rows: Mapping[str, Sequence[float]], columns: Sequence[str], name: str) -> pd.DataFrame:
    df = pd.DataFrame.from_dict(dict(rows), orient="index", columns=list(columns), dtype=float)
    return df.rename_axis(index=None, columns=name)


# --------------------------------------------------------------------------- rendering


def _formatted(df: pd.DataFrame, digits: int, missing: str) -> pd.DataFrame:
    """``df`` with numbers as strings of ``digits`` decimals and ``missing`` for NaN."""
    return df.apply(
        lambda col: col.map(lambda v: missing if _num(v) is None else f"{v:.{digits}f}")
    )


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "≤": r"$\leq$",
    "–": "--",
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
