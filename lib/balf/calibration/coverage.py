"""Layers that saw fewer calibration rows than their rank (a hidden rank collapse).

A layer's activation-aware statistics have rank at most the number of rows it saw. Where that is
below the layer's maximum rank ``R`` — classifier heads and squeeze-excitation convs see one row
per image — every rank from ``rows`` up keeps "all" the calibration energy (``energy_kept`` says
1.0), so a budget cuts the layer to ``rows`` at no apparent loss. Such layers are named with a
warning, and in :attr:`balf.Report.under_calibrated`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

__all__ = ["under_calibrated", "warn_under_calibrated"]


def under_calibrated(
    rows: Mapping[str, int], max_ranks: Mapping[str, int]
) -> dict[str, dict[str, int]]:
    """``{name: {"rows": rows seen, "rows_needed": max rank}}`` of the layers of ``max_ranks``
    whose statistics saw fewer rows than their maximum rank (``rows``: by layer name)."""
    out = {}
    for name, needed in max_ranks.items():
        seen = rows[name]
        if seen < needed:
            out[name] = {"rows": int(seen), "rows_needed": int(needed)}
    return out


def warn_under_calibrated(found: Mapping[str, Mapping[str, int]], num_samples: int) -> None:
    """One ``UserWarning`` naming the layers, the rows they saw and the rows they need."""
    if not found:
        return
    listed = ", ".join(
        f"{name} ({v['rows']} rows, needs {v['rows_needed']})"
        for name, v in list(found.items())[:8]
    )
    more = f" and {len(found) - 8} more" if len(found) > 8 else ""
    warnings.warn(
        f"{len(found)} layer(s) saw fewer calibration rows than their rank, so their energy "
        f"reads 1.0 from rank = rows on and a budget may cut them there at no apparent loss: "
        f"{listed}{more}. Calibrate on more samples (here {num_samples}; a layer that sees one "
        "row per sample needs at least its rank in samples), or leave these layers out "
        "(layers=[...]); see report.under_calibrated",
        UserWarning,
        stacklevel=3,
    )
