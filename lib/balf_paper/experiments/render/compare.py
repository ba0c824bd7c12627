"""Compare a run's ``results.json`` files with a reference run (e.g. the committed results).

Points are matched by mode and knob. Compared: ``accuracy``, ``loss``, ``flops_ratio`` and
``params_ratio`` (numbers, to a number of decimals) and ``ranks`` (exactly).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from balf.errors import BALFError
from balf_paper.experiments.sweep.points import ResultPoint, read_points

__all__ = ["Comparison", "compare_runs"]

QUANTITIES = ("accuracy", "loss", "flops_ratio", "params_ratio")
_MAX_DECIMALS = 10


@dataclass
class Comparison:
    """Outcome of :func:`compare_runs`.

    Attributes:
        points: points compared (present in both runs).
        decimals: the number of decimals to which every compared number agrees
            (``_MAX_DECIMALS`` when identical).
        differences: one line per difference beyond ``required`` decimals, missing point or mode.
    """

    reference: Path
    required: int
    points: int = 0
    decimals: int = _MAX_DECIMALS
    differences: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return not self.differences

    def summary(self) -> str:
        """One line when the runs match, else a line and the list of differences."""
        if self.matches:
            return (
                f"matches the committed results ({self.reference}) to {self.decimals} decimals "
                f"({self.points} points: {', '.join(QUANTITIES)} and ranks)"
            )
        lines = [
            f"differs from the committed results ({self.reference}) in "
            f"{len(self.differences)} place(s) (beyond {self.required} decimals):"
        ]
        return "\n".join([*lines, *(f"  - {d}" for d in self.differences)])


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _agreeing_decimals(a: float, b: float) -> int:
    """The largest ``n`` ≤ ``_MAX_DECIMALS`` with ``|a − b| ≤ 0.5·10⁻ⁿ``."""
    d = abs(a - b)
    if d == 0:
        return _MAX_DECIMALS
    return max(0, min(_MAX_DECIMALS, math.floor(-math.log10(2 * d))))


def compare_runs(
    run: str | Path, reference: str | Path, modes: Sequence[str], decimals: int = 4
) -> Comparison:
    """Compare ``<run>/<mode>/results.json`` with ``<reference>/<mode>/results.json``.

    Args:
        run, reference: folders holding one folder per mode.
        modes: the modes to compare.
        decimals: numbers agreeing to fewer decimals are listed as differences.
    """
    out = Comparison(reference=Path(reference), required=decimals)
    for mode in modes:
        paths = (Path(run) / mode / "results.json", Path(reference) / mode / "results.json")
        ours, theirs = (_load(p) for p in paths)
        if ours is None or theirs is None:
            which = "this run" if ours is None else "the reference"
            out.differences.append(f"{mode}: no readable results.json in {which}")
            continue
        try:
            mine = {p.key: p for p in read_points(ours, paths[0])}
            ref = {p.key: p for p in read_points(theirs, paths[1])}
        except BALFError as exc:
            out.differences.append(f"{mode}: {exc}")
            continue
        for knob in sorted(set(mine) ^ set(ref)):
            where = "the reference" if knob in mine else "this run"
            out.differences.append(f"{mode} {knob}: point missing from {where}")
        for knob in [k for k in mine if k in ref]:
            out.points += 1
            _compare_points(out, f"{mode} {knob}", mine[knob], ref[knob], decimals)
    return out


def _compare_points(
    out: Comparison, name: str, a: ResultPoint, b: ResultPoint, decimals: int
) -> None:
    """Add the differences of two points of the same knob to ``out``."""
    for q in QUANTITIES:
        x, y = getattr(a, q), getattr(b, q)
        if x is None and y is None:
            continue
        if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
            out.differences.append(f"{name}: {q} {x!r} vs {y!r}")
            continue
        n = _agreeing_decimals(x, y)
        out.decimals = min(out.decimals, n)
        if n < decimals:
            out.differences.append(f"{name}: {q} {x:.6g} vs {y:.6g}")
    ranks_a, ranks_b = a.ranks or {}, b.ranks or {}
    if ranks_a != ranks_b:
        changed = sorted(n for n in set(ranks_a) | set(ranks_b) if ranks_a.get(n) != ranks_b.get(n))
        out.differences.append(f"{name}: ranks differ at {', '.join(changed)}")
