"""The damage-curve objective: each layer's divergence measured at several truncations (see
:mod:`balf.ranks.objectives`)."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from balf.errors import BALFError
from balf.ranks.costs import LayerCandidate
from balf.ranks.objectives.base import Objective
from balf.ranks.objectives.sensitivity import DIVERGENCES

__all__ = ["DamageObjective", "damage_curve"]


def damage_curve(points: np.ndarray, lost: np.ndarray) -> np.ndarray:
    """The damage ``D̂(x)`` at lost energies ``lost``, from measured ``(x_k, D_k)`` points.

    Piecewise linear through ``(0, 0)`` and the points in order of ``x`` (made non-decreasing);
    past the deepest point it goes on with the larger of its last segment's slope and its mean
    slope ``D/x`` (a deeper cut never looks cheaper per unit of energy than the measured ones).

    Args:
        points: ``(P, 2)``, ``P ≥ 1``, ``x_k`` in ``(0, 1]``, ``D_k ≥ 0``.
        lost: ``(R,)`` lost energies ``1 − e(r)`` in ``[0, 1]``.

    Returns:
        ``(R,)`` float64, ``D̂ ≥ 0``, non-decreasing in ``lost``.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    pts = pts[np.argsort(pts[:, 0], kind="stable")]
    xs = np.concatenate([[0.0], pts[:, 0]])
    ys = np.maximum.accumulate(np.concatenate([[0.0], np.maximum(pts[:, 1], 0.0)]))
    lost = np.asarray(lost, dtype=np.float64)
    out = np.interp(lost, xs, ys)
    seg = (ys[-1] - ys[-2]) / max(xs[-1] - xs[-2], 1e-12)
    slope = max(seg, ys[-1] / max(xs[-1], 1e-12))
    beyond = lost > xs[-1]
    out[beyond] = ys[-1] + slope * (lost[beyond] - xs[-1])
    return out


@dataclass(frozen=True)
class DamageObjective(Objective):
    """Minus each layer's measured damage curve: ``v_l(r) = −D̂_l(1 − e_l(r))``.

    :class:`SensitivityObjective` assumes the damage of a truncation is proportional to the
    energy it loses, calibrated at one probe; when the allocator then cuts a layer far deeper
    than the probe, the real damage grows faster. Here each layer's divergence ``D_l`` is
    estimated at several truncations (``probe_keeps``, fractions of its parameters kept), all
    at once to second order from one forward and one backward pass
    (:func:`balf.pipeline.sensitivity_fisher.fisher_damage`), and the allocator minimises the
    summed damage read off the piecewise-linear curve through them (:func:`damage_curve`).
    Layers no probe truncation takes energy from get the median slope of the others.

    Args:
        probe_keeps: the probe truncations (fractions of the layer's parameters kept).
        probe_samples: calibration samples the estimate runs on (``None``: all of them).
        divergence: one of :data:`DIVERGENCES`.
    """

    name: ClassVar[str] = "damage"
    probe_keeps: tuple[float, ...] = (0.125, 0.25, 0.5, 0.75)
    probe_samples: int | None = 128
    divergence: str = "auto"

    def __post_init__(self) -> None:
        keeps = self.probe_keeps
        if isinstance(keeps, (int, float)) or not keeps:
            raise BALFError(f"probe_keeps must be a non-empty sequence, got {keeps!r}")
        for k in keeps:
            if isinstance(k, bool) or not isinstance(k, numbers.Real) or not 0 < float(k) < 1:
                raise BALFError(f"probe_keeps must be numbers in (0, 1), got {keeps!r}")
        object.__setattr__(self, "probe_keeps", tuple(sorted({float(k) for k in keeps})))
        n = self.probe_samples
        if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
            raise BALFError(f"probe_samples must be a positive integer or None, got {n!r}")
        if self.divergence not in DIVERGENCES:
            raise BALFError(f"divergence must be one of {DIVERGENCES}, got {self.divergence!r}")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["probe_keeps"] = list(self.probe_keeps)
        return out

    def prepare(self, candidates, context):
        damage = context.layer_damage(candidates, self)
        slopes = [pts[-1][1] / pts[-1][0] for pts in damage.values() if pts]
        fill = float(np.median(slopes)) if slopes else 1.0
        out = []
        for cand in candidates:
            pts = damage[cand.name] or [(1.0, fill)]
            out.append(dataclasses.replace(cand, damage=np.asarray(pts, dtype=np.float64)))
        return out

    def values(self, candidate: LayerCandidate) -> np.ndarray:
        if candidate.damage is None:
            raise BALFError(
                f"layer {candidate.name!r} has no measured damage: DamageObjective.prepare "
                "measures it (compress through balf.compress or a balf.Compressor)"
            )
        lost = 1.0 - np.asarray(candidate.energies, dtype=np.float64)
        return -damage_curve(candidate.damage, np.clip(lost, 0.0, 1.0))
