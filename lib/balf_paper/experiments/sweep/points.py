"""One point of a sweep: the type the sweep runner writes and tables, plots and comparisons read.

A ``results.json`` (:mod:`balf_paper.experiments.sweep.store`) holds a list ``points``, one JSON
object per evaluated model (the uncompressed one has knob ``"original"``), and, for knob values
whose budget could not be met, a list ``skipped``. :class:`ResultPoint` and :class:`SkippedPoint`
are those objects as frozen dataclasses.

**The point format** (:data:`FORMAT` 2) is the same for every task: the knob, ``metrics`` (a dict
of every score of the evaluation: the task's metric, e.g. ``accuracy``/``loss``,
``perplexity`` or ``spearman``, and any further metric such as per-corruption accuracies or
zero-shot scores), the whole-model ``flops_ratio``/``params_ratio`` (measured), then what the
method reports (ranks, layer ratios, budget, timings, the method config). ``from_dict``/``to_dict``
round-trip a stored object exactly (same keys, same order, same values); keys that are no field
are kept in :attr:`ResultPoint.extra`.

**Format 1** (image sweeps before the task abstraction, every committed ``results.json`` under
``results/<dataset>/``) stored the metrics at the top level (``accuracy``, ``loss``,
``corrupted_accuracy``, ``corrupted``). :meth:`ResultPoint.from_dict` reads it by converting it
(:func:`upgrade_point`: every top-level key that is no format-2 field moves into ``metrics``,
nothing is dropped), so every reader sees format 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from balf.errors import BALFError

__all__ = [
    "FORMAT",
    "ORIGINAL",
    "REQUIRED_FIELDS",
    "ResultPoint",
    "SkippedPoint",
    "compressed_of",
    "finite",
    "knob_key",
    "original_of",
    "read_points",
    "upgrade_point",
]

FORMAT = 2
"""The point format the runner writes (``results.json``'s ``"format"``; absent: format 1)."""

ORIGINAL = "original"
"""The knob of the uncompressed model's point."""

REQUIRED_FIELDS = ("knob", "metrics", "flops_ratio", "params_ratio")
"""Keys every stored point has (values may be ``null`` where a number was not finite)."""

REQUIRED_FORMAT_1 = ("knob", "accuracy", "loss", "flops_ratio", "params_ratio")
"""Keys every format-1 point has (image classification)."""


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


def _require(data: Mapping[str, Any], required: Sequence[str], source: str | Path | None) -> None:
    missing = [k for k in required if k not in data]
    if missing:
        raise BALFError(
            f"{_where(source)}: result point {data.get('knob', '?')!r} lacks the required "
            f"field(s) {', '.join(map(repr, missing))} (every point has {', '.join(required)})"
        )


@dataclass(frozen=True)
class ResultPoint:
    """One evaluated model of a sweep.

    Attributes:
        knob: the mode's value (keep-ratio, energy threshold, Model Folding's ``keep``) or
            ``"original"``.
        metrics: every score of the evaluation by name (``None`` where not finite): the task's
            metric (``accuracy`` in 0–1 and ``loss``; ``perplexity``; ``spearman``) and any
            other (``corrupted_accuracy`` and ``corrupted``: ``{corruption: {severity:
            accuracy}}`` of corruption sweeps, zero-shot scores, ...).
        flops_ratio, params_ratio: whole-model FLOPs / parameters, compressed over original
            (measured).
        eval_samples: evaluated samples; flops, params: absolute whole-model counts.
        layer_flops_ratio, layer_params_ratio: the same ratios over the chosen layers only.
        budget, achieved: the allocator's budget and the cost it reached (chosen layers).
        factorized_layers: how many layers were factorized.
        method: the method's config (``to_dict()``), e.g. the energy threshold that meets a ratio;
            objective: the allocation objective as the report gives it (e.g. measured weights).
        repair, kept_channels: Model Folding's repair and the kept channels of every group.
        ranks: ``{layer name: rank}`` of the factorized layers (empty for the original).
        timings: seconds per compression phase; compress_seconds: wall time of the compression;
            eval_seconds: of the evaluation.
        same_ranks_as: the mode of an identical model (same ranks, same factorization) whose
            evaluation this point reuses.
        saved_model: path of the saved compressed model (``--save-model``).
        seeds, metric_std, metric_per_seed: a mean over calibration seeds (tables only, never
            stored by the runner): the seeds, the sample std and the values of each metric.
        extra: stored keys that are none of the above, by name.
        key_order: the keys in stored order (``()`` for a point not read from JSON).

    Example:
        >>> p = ResultPoint.from_dict({"knob": 0.5, "metrics": {"accuracy": 0.9, "loss": 0.3},
        ...                            "flops_ratio": 0.5, "params_ratio": 0.4})
        >>> p.accuracy, p.metric("loss"), p.to_dict()["params_ratio"]
        (0.9, 0.3, 0.4)
    """

    knob: float | str
    metrics: Mapping[str, Any]
    flops_ratio: float | None
    params_ratio: float | None
    eval_samples: int | None = None
    flops: int | None = None
    params: int | None = None
    layer_flops_ratio: float | None = None
    layer_params_ratio: float | None = None
    budget: float | None = None
    achieved: float | None = None
    factorized_layers: int | None = None
    method: Mapping[str, Any] | None = None
    objective: Mapping[str, Any] | None = None
    repair: str | None = None
    kept_channels: Mapping[str, int] | None = None
    ranks: Mapping[str, int] | None = None
    timings: Mapping[str, float] | None = None
    compress_seconds: float | None = None
    eval_seconds: float | None = None
    same_ranks_as: str | None = None
    saved_model: str | None = None
    seeds: Sequence[int] | None = None
    metric_std: Mapping[str, float] | None = None
    metric_per_seed: Mapping[str, Sequence[float]] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | Path | None = None) -> ResultPoint:
        """The point of a stored JSON object (format 2, or format 1 converted by
        :func:`upgrade_point`); ``source`` (the file) names it in errors.

        Raises:
            BALFError: ``data`` is no object, lacks a required field (:data:`REQUIRED_FIELDS`,
                format 1: :data:`REQUIRED_FORMAT_1`), or its knob is neither a number nor
                ``"original"``.
        """
        if not isinstance(data, Mapping):
            raise BALFError(
                f"{_where(source)}: a result point must be a JSON object, not {type(data).__name__}"
            )
        if "metrics" not in data:
            data = upgrade_point(data, source)
        _require(data, REQUIRED_FIELDS, source)
        _checked_knob(data, source)
        if not isinstance(data["metrics"], Mapping):
            raise BALFError(f"{_where(source)}: a point's 'metrics' must be a JSON object")
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

    def metric(self, name: str) -> Any:
        """The metric ``name`` (``None`` when the point has none)."""
        return self.metrics.get(name)

    def std(self, name: str) -> float | None:
        """The std over seeds of metric ``name`` (``None`` for a single run)."""
        return finite((self.metric_std or {}).get(name))

    @property
    def accuracy(self) -> float | None:
        """Top-1 accuracy (image classification)."""
        return self.metrics.get("accuracy")

    @property
    def loss(self) -> float | None:
        """Mean loss (image classification)."""
        return self.metrics.get("loss")

    @property
    def corrupted_accuracy(self) -> float | None:
        """Mean accuracy over corruptions and severities (corruption sweeps)."""
        return self.metrics.get("corrupted_accuracy")

    @property
    def corrupted(self) -> Mapping[str, Mapping[str, float]] | None:
        """``{corruption: {severity: accuracy}}`` (corruption sweeps)."""
        return self.metrics.get("corrupted")

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


def upgrade_point(data: Mapping[str, Any], source: str | Path | None = None) -> dict[str, Any]:
    """A format-1 point as a format-2 point (the converter every reader applies).

    Format 1 kept the scores at the top level. Every key that is a format-2 field stays where it
    is, in its order; every other key (``accuracy``, ``loss``, ``corrupted_accuracy``,
    ``corrupted``, metrics of a custom evaluation) moves, in its order, into ``metrics``, placed
    where the first of them stood. Nothing is dropped or changed.

    Raises:
        BALFError: ``data`` lacks a field every format-1 point has (:data:`REQUIRED_FORMAT_1`).
    """
    _require(data, REQUIRED_FORMAT_1, source)
    out: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    for key, value in data.items():
        if key in _FIELDS:
            out[key] = value
        else:
            if not metrics:
                out["metrics"] = metrics
            metrics[key] = value
    return out


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


def original_of(points: Sequence[ResultPoint], metric: str = "accuracy") -> ResultPoint | None:
    """The uncompressed model's point, if there is one with a finite ``metric``."""
    return next((p for p in points if p.is_original and finite(p.metric(metric)) is not None), None)


def compressed_of(points: Sequence[ResultPoint], metric: str = "accuracy") -> list[ResultPoint]:
    """The compressed points (knob ≠ ``"original"``) with a finite ``metric``, in stored order."""
    return [p for p in points if not p.is_original and finite(p.metric(metric)) is not None]
