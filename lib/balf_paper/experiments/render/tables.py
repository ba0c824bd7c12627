"""Results tables: tabulate stored sweep results (matched reductions, corruption, calibration
size, compression time).

Everything here works from the ``results.json`` files the sweep runner writes
(:mod:`balf_paper.experiments.sweep.runner`, loaded by :mod:`balf_paper.experiments.render.loaders`)
and from the compression-time benchmark JSON; nothing is recomputed. Points are read as
:class:`~balf_paper.experiments.sweep.points.ResultPoint`. Tables are :class:`pandas.DataFrame`
objects of numbers (``NaN`` where there is no value) until :func:`write_table`
(:mod:`balf_paper.experiments.render.table_format`) formats them as LaTeX and Markdown.

**Matched-reduction rule** (:func:`best_within`): for a mode and a target keep-ratio ``t`` of a
quantity (FLOPs or parameters, whole model, measured), the compared point is the one with the
**highest accuracy among the mode's compressed points whose measured ratio is ≤ t** (``t + tol``
with ``tol = 1e-9`` against float noise); ties go to the smaller ratio. The uncompressed
``"original"`` point never counts. When no point is that small the cell is empty ("–"). The drop is
``100 · (original accuracy − accuracy)`` in percentage points, against the original accuracy stored
in the same results file; positive numbers are losses. Where a mode's points are means over several
calibration seeds (:mod:`balf_paper.experiments.sweep.seeds`), the rule runs on the mean points and
the cell reads "drop ± std" (std of the accuracy over seeds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from balf.errors import BALFError
from balf_paper.experiments.modes import display_of
from balf_paper.experiments.render.loaders import (
    SPECIAL_DIRS,
    load_benchmark_rows,
    load_mode_results,
    load_numbered_runs,
)
from balf_paper.experiments.render.table_format import to_latex, to_markdown, write_table
from balf_paper.experiments.sweep.points import (
    ResultPoint,
    compressed_of,
    finite,
    original_of,
    read_points,
)
from balf_paper.experiments.sweep.seeds import mean_std_text

__all__ = [
    "DEFAULT_TARGETS",
    "SPECIAL_DIRS",
    "best_point_within",
    "best_within",
    "calibration_size_table",
    "compression_time_table",
    "corruption_table",
    "load_benchmark_rows",
    "load_mode_results",
    "load_numbered_runs",
    "matched_reduction_table",
    "mode_label",
    "original_point",
    "points_table",
    "to_latex",
    "to_markdown",
    "write_table",
]

DEFAULT_TARGETS: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
"""Keep-ratios of the matched-reduction tables."""

_PHASES = ("statistics", "decomposition", "allocation", "replacement")
_OPTIONAL_COLUMNS = {
    "forward": "Forward (s)",
    "total_over_forward": "Total / forward",
    "total_cpu": "Total CPU (s)",
    "forward_cpu": "Forward CPU (s)",
    "total_over_forward_cpu": "Total / forward (CPU)",
    "peak_memory_gb": "Peak memory (GB)",
    "peak_rss_increase_gb": "Peak RSS increase (GiB)",
    "peak_cuda_gb": "Peak CUDA memory (GiB)",
}


def mode_label(mode: str) -> str:
    """Display name of ``mode`` (declared with its config class; the name itself when unknown)."""
    display = display_of(mode)
    return display.label if display is not None else mode


# --------------------------------------------------------------------------- points


def original_point(results: Mapping[str, Any]) -> ResultPoint | None:
    """The uncompressed model's point (knob ``"original"``) of a results dict."""
    return original_of(read_points(results))


def best_within(
    points: Sequence[ResultPoint], quantity: str, target: float, tol: float = 1e-9
) -> ResultPoint | None:
    """The most accurate point whose ``<quantity>_ratio`` is ≤ ``target`` (module rule).

    Args:
        points: compressed points.
        quantity: ``"flops"`` or ``"params"``.
        target: keep-ratio (e.g. 0.6 = at most 60% of the original FLOPs).
        tol: slack against float noise in the measured ratios.

    Returns:
        The point, or ``None`` when no point is at or below ``target``. Ties in accuracy go to
        the smaller ratio.
    """
    eligible = [
        p
        for p in points
        if p.ratio(quantity) is not None
        and finite(p.accuracy) is not None
        and p.ratio(quantity) <= target + tol
    ]
    if not eligible:
        return None
    return max(eligible, key=lambda p: (p.accuracy, -p.ratio(quantity)))


def best_point_within(
    points: Sequence[Mapping[str, Any]], quantity: str, target: float, tol: float = 1e-9
) -> Mapping[str, Any] | None:
    """:func:`best_within` of stored points (JSON objects); the chosen object itself."""
    typed = [ResultPoint.from_dict(p) for p in points]
    best = best_within(typed, quantity, target, tol)
    return next((p for p, t in zip(points, typed, strict=True) if t is best), None)


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
        qualifies or the mode has no original point. See :func:`best_within`.

    Example:
        >>> sweeps = load_mode_results("results/cifar10/resnet20")  # doctest: +SKIP
        >>> table = matched_reduction_table(sweeps, "flops")  # doctest: +SKIP
        >>> write_table(table, "tables/matched_flops")  # doctest: +SKIP
    """
    if quantity not in ("flops", "params"):
        raise BALFError(f"quantity must be 'flops' or 'params', not {quantity!r}")
    rows = {}
    for mode, results in results_by_mode.items():
        stored = read_points(results)
        base, points = original_of(stored), compressed_of(stored)
        row = []
        for t in targets:
            best = best_within(points, quantity, t)
            ok = base is not None and best is not None
            drop = 100.0 * (base.accuracy - best.accuracy) if ok else math.nan
            std = best.std("accuracy") if ok else None
            row.append(drop if std is None else mean_std_text(drop, 100.0 * std))
        rows[mode_label(mode)] = row
    return _frame(rows, [f"{t:g}" for t in targets], "Mode")


def points_table(results_by_mode: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Every compressed point of every mode, as measured.

    Returns:
        One row per point (``"<mode label> <knob>"``, modes in the given order, knobs ascending);
        columns top-1 (%, ``"m ± s"`` where the point is a mean over seeds), the whole-model
        FLOPs and parameter keep-ratios (3 decimals) and the number of layers factorized.
    """
    rows: dict[str, list[Any]] = {}
    for mode, results in results_by_mode.items():
        for p in sorted(compressed_of(read_points(results)), key=lambda p: float(p.knob)):
            std = p.std("accuracy")
            top1 = mean_std_text(100.0 * p.accuracy, None if std is None else 100.0 * std)
            ratios = [
                math.nan if r is None else f"{r:.3f}" for r in (p.flops_ratio, p.params_ratio)
            ]
            count = p.factorized_layers
            rows[f"{mode_label(mode)} {p.knob:g}"] = [
                top1,
                *ratios,
                math.nan if count is None else str(count),
            ]
    columns = ["Top-1 (%)", "FLOPs ratio", "Params ratio", "Layers factorized"]
    return _frame(rows, columns, "Point")


def _corruption_column(point: ResultPoint, corruptions: list[str]) -> dict[str, float]:
    """Accuracy (%) of one point: clean, per corruption (mean over severities), overall mean.

    Appends corruptions not yet in ``corruptions`` to it (first-seen order).
    """
    column = {"clean": 100.0 * point.accuracy}
    values = []
    for corruption, severities in (point.corrupted or {}).items():
        accs = [a for a in map(finite, (severities or {}).values()) if a is not None]
        if corruption not in corruptions:
            corruptions.append(corruption)
        if accs:
            column[corruption] = 100.0 * sum(accs) / len(accs)
            values += accs
    if values:
        column["mean"] = 100.0 * sum(values) / len(values)
    return column


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
        stored = read_points(results)
        base = original_of(stored)
        entries = [] if base is None or "original" in columns else [("original", base)]
        entries += [(f"{mode_label(mode)} {p.knob:g}", p) for p in compressed_of(stored)]
        for name, point in entries:
            columns[name] = _corruption_column(point, corruptions)
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
    stored = {size: read_points(results) for size, results in runs.items()}
    knobs: list[float] = []
    for points in stored.values():
        knobs += [k for k in dict.fromkeys(p.knob for p in compressed_of(points)) if k not in knobs]
    knobs.sort()
    rows: dict[str, list[float]] = {}
    for size, points in stored.items():
        base = original_of(points)
        by_knob = {p.knob: p.accuracy for p in compressed_of(points)}
        values = [base.accuracy if base else math.nan] + [by_knob.get(k, math.nan) for k in knobs]
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
    optional = [k for k in _OPTIONAL_COLUMNS if any(finite(r.get(k)) is not None for r in rows)]
    columns = [f"{p.capitalize()} (s)" for p in phases] + ["Total (s)"]
    columns += [_OPTIONAL_COLUMNS[k] for k in optional]
    table = {}
    for r in rows:
        ph = r.get("phases") if isinstance(r.get("phases"), dict) else {}
        values = [finite(ph.get(p)) for p in phases] + [finite(r.get("total"))]
        values += [finite(r.get(k)) for k in optional]
        table[str(r["model"])] = [math.nan if v is None else v for v in values]
    return _frame(table, columns, "Model")


def _frame(rows: Mapping[str, Sequence[float]], columns: Sequence[str], name: str) -> pd.DataFrame:
    """Rows ``{index: values}`` as a float frame with ``columns``, the column axis named."""
    text = any(isinstance(v, str) for values in rows.values() for v in values)  # "m ± s" cells
    df = pd.DataFrame.from_dict(
        dict(rows), orient="index", columns=list(columns), dtype=object if text else float
    )
    return df.rename_axis(index=None, columns=name)
