"""Where a :class:`balf.Compressor`'s latency table comes from.

Either the user gives a measured :class:`LatencyTable`, used as is, or the table is measured on
first use with the user's options (:func:`balf.ranks.latency.measure_latency`) and measured again
whenever what the timings depend on has changed since (:mod:`.staleness`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from balf.errors import BALFError
from balf.ranks.latency.measure import measure_latency
from balf.ranks.latency.staleness import is_stale
from balf.ranks.latency.table import LatencyTable

__all__ = ["LatencySource"]


class LatencySource:
    """A given latency table, or the options to measure one (``None``: the defaults)."""

    def __init__(self, latency: LatencyTable | Mapping[str, Any] | None) -> None:
        self.table = latency if isinstance(latency, LatencyTable) else None
        # None when given: a user's table is never re-measured
        self.options = None if self.table is not None else dict(latency or {})

    def table_for(
        self,
        model: nn.Module,
        layers: Mapping[str, nn.Module],
        example: Callable[[], Tensor],
        defaults: Mapping[str, Any],
    ) -> tuple[LatencyTable, bool]:
        """The table of ``layers``, measured now when needed, and whether it was measured.

        Args:
            example: returns the input ``(1, ...)`` to measure with (called only to measure).
            defaults: :func:`measure_latency` options the user's options may override
                (``progress``, ``rank_multiple``).
        """
        measured = False
        options = self.options
        if options is not None and (self.table is None or is_stale(self.table, model, options)):
            self.table = measure_latency(model, example(), layers, **{**defaults, **options})
            measured = True
        missing = [n for n in layers if n not in self.table.layers]
        if missing:
            raise BALFError(
                f"the latency table has no entry for layers {missing[:5]}; measure it with "
                "balf.ranks.latency.measure_latency on the same layers"
            )
        return self.table, measured
