"""One point of a sweep: the type the sweep runner writes and tables, plots and comparisons read.

A ``results.json`` (:mod:`balf_paper.experiments.sweep.runner`) holds a list ``points``, one JSON
object per evaluated model (the uncompressed one has knob ``"original"``), and, for knob values
whose budget could not be met, a list ``skipped``. :class:`ResultPoint` and :class:`SkippedPoint`
are those objects as frozen dataclasses; ``from_dict``/``to_dict`` round-trip the stored JSON
exactly: same keys, in the same order, with the same values (``to_dict(from_dict(d)) == d``, key
order included). Keys that are no field of :class:`ResultPoint` (metrics of a custom
``evaluate_fn``) are kept in :attr:`ResultPoint.extra`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from balf.errors import BALFError

__all__ = [
    "ORIGINAL",
    "REQUIRED_FIELDS",
    "ResultPoint",
    "SkippedPoint",
    "compressed_of",
    "finite",
    "knob_key",
    "original_of",
    "read_points",
]

ORIGINAL = "original"
"""The knob of the uncompressed model's point."""

REQUIRED_FIELDS = ("knob", "accuracy", "loss", "flops_ratio", "params_ratio")
"""Keys every stored point has (values may be ``null`` where a metric was not finite)."""


def finite(value: Any) -> float | None:
    """``value`` as a finite float, else ``None`` (booleans, strings and NaN included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def knob_key(knob: float | str) -> str:
    """A knob as text that identifies it: ``"original"`` or the number to 10 digits."""
    return ORIGINAL if knob == ORIGINAL else f"{float(knob):.10g}"


def _where(source: str | Path | None) -> str:
    return f"{source}" if source is not None else "results"


def _checked_knob(data: Mapping[str, Any], source: str | Path | None) -> float | str:
    knob = data["knob"]
    if knob == ORIGINAL or (isinstance(knob, (int, float)) and not isinstance(knob, bool)):
        return knob
    raise BALFError(
        f"{_where(source)}: a result point has knob {knob!r}; a knob is a number or {ORIGINAL!r}"
    )


@dataclass(frozen=True)
class ResultPoint:
    """One evaluated model of a sweep.

    Attributes:
        knob: the mode's value (keep-ratio, energy threshold, Model Folding's ``keep``) or
            ``"original"``.
        accuracy: top-1 accuracy in 0–1 (``None``: not finite); loss: mean loss.
        flops_ratio, params_ratio: whole-model FLOPs / parameters, compressed over original
            (measured).
        corrupted_accuracy: mean accuracy over all corruptions and severities;
            corrupted: ``{corruption: {severity: accuracy}}`` (corruption sweeps).
        eval_samples: evaluated images; flops, params: absolute whole-model counts.
        layer_flops_ratio, layer_params_ratio: the same ratios over the chosen layers only.
        budget, achieved: the allocator's budget and the cost it reached (chosen layers).
        factorized_layers: how many layers were factorized.
        repair, kept_channels: Model Folding's repair and the kept channels of every group.
        ranks: ``{layer name: rank}`` of the factorized layers (empty for the original).
        timings: seconds per compression phase; eval_seconds: seconds of the evaluation.
        saved_model: path of the saved compressed model (``--save-model``).
        extra: stored keys that are none of the above, by name.
        key_order: the keys in stored order (``()`` for a point not read from JSON).

    Example:
        >>> p = ResultPoint.from_dict({"knob": 0.5, "accuracy": 0.9, "loss": 0.3,
        ...                            "flops_ratio": 0.5, "params_ratio": 0.4})
        >>> p.accuracy, p.to_dict()["params_ratio"]
        (0.9, 0.4)
    """

    knob: float | str
    accuracy: float | None
    loss: float | None
    flops_ratio: float | None
    params_ratio: float | None
    corrupted_accuracy: float | None = None
    corrupted: Mapping[str, Mapping[str, float]] | None = None
    eval_samples: int | None = None
    flops: int | None = None
    params: int | None = None
    layer_flops_ratio: float | None = None
    layer_params_ratio: float | None = None
    budget: float | None = None
    achieved: float | None = None
    factorized_layers: int | None = None
    repair: str | None = None
    kept_channels: Mapping[str, int] | None = None
    ranks: Mapping[str, int] | None = None
    timings: Mapping[str, float] | None = None
    eval_seconds: float | None = None
    saved_model: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | Path | None = None) -> ResultPoint:
        """The point of a stored JSON object; ``source`` (the file) names it in errors.

        Raises:
            BALFError: ``data`` is no object, lacks one of :data:`REQUIRED_FIELDS`, or its
                knob is neither a number nor ``"original"``.
        """
        if not isinstance(data, Mapping):
            raise BALFError(
                f"{_where(source)}: a result point must be a JSON object, not {type(data).__name__}"
            )
        missing = [k for k in REQUIRED_FIELDS if k not in data]
        if missing:
            raise BALFError(
                f"{_where(source)}: result point {data.get('knob', '?')!r} lacks the required "
                f"field(s) {', '.join(map(repr, missing))} (every point has "
                f"{', '.join(REQUIRED_FIELDS)})"
            )
        _checked_knob(data, source)
        known = {k: v for k, v in data.items() if k in _FIELDS}
        extra = {k: v for k, v in data.items() if k not in _FIELDS}
        return cls(**known, extra=extra, key_order=tuple(data))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the point: stored keys in stored order, then any new ones.

        Optional fields that are ``None`` and were not stored are left out.
        """
        keys = list(self.key_order)
        keys += [
            k
            for k in _FIELDS
            if k not in self.key_order and (k in REQUIRED_FIELDS or getattr(self, k) is not None)
        ]
        keys += [k for k in self.extra if k not in keys]
        return {k: getattr(self, k) if k in _FIELDS else self.extra[k] for k in keys}

    @property
    def is_original(self) -> bool:
        """Whether this is the uncompressed model's point."""
        return self.knob == ORIGINAL

    @property
    def key(self) -> str:
        """:func:`knob_key` of the knob."""
        return knob_key(self.knob)

    def ratio(self, quantity: str) -> float | None:
        """``flops_ratio`` (``quantity="flops"``) or ``params_ratio`` (``"params"``), if finite."""
        if quantity not in _RATIOS:
            raise BALFError(f"quantity must be 'flops' or 'params', not {quantity!r}")
        return finite(_RATIOS[quantity](self))


_FIELDS = tuple(f.name for f in fields(ResultPoint) if f.name not in ("extra", "key_order"))
_RATIOS = {"flops": lambda p: p.flops_ratio, "params": lambda p: p.params_ratio}


@dataclass(frozen=True)
class SkippedPoint:
    """A knob value whose budget the chosen layers cannot reach (``results["skipped"]``)."""

    knob: float
    reason: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | Path | None = None) -> SkippedPoint:
        """The skipped point of a stored JSON object ``{"knob": …, "reason": …}``."""
        if not isinstance(data, Mapping) or "knob" not in data:
            raise BALFError(f"{_where(source)}: every skipped entry needs a 'knob'")
        return cls(_checked_knob(data, source), str(data.get("reason", "")))

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON object."""
        return {"knob": self.knob, "reason": self.reason}


def read_points(results: Mapping[str, Any], source: str | Path | None = None) -> list[ResultPoint]:
    """The points of a loaded ``results.json``, in stored order (``source`` names it in errors)."""
    return [ResultPoint.from_dict(p, source) for p in results.get("points", [])]


def original_of(points: Sequence[ResultPoint]) -> ResultPoint | None:
    """The uncompressed model's point, if there is one with a finite accuracy."""
    return next((p for p in points if p.is_original and finite(p.accuracy) is not None), None)


def compressed_of(points: Sequence[ResultPoint]) -> list[ResultPoint]:
    """The compressed points (knob ≠ ``"original"``) with a finite accuracy, in stored order."""
    return [p for p in points if not p.is_original and finite(p.accuracy) is not None]
