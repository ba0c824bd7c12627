"""Filling a compression :class:`Report`: one layer's entry, and the totals over the layers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from balf.decomposition import LayerDecomposition
from balf.ranks.allocation import Allocation
from balf.ranks.configs import CompressionConfig
from balf.ranks.costs import LayerCandidate
from balf.report.model import LayerReport, Report

__all__ = ["fill_totals", "layer_report"]


def layer_report(
    cand: LayerCandidate,
    rank: int,
    factorized: bool,
    dec: LayerDecomposition,
    aa_energies: dict[str, np.ndarray] | None,
    config: CompressionConfig,
) -> LayerReport:
    """The report entry of one layer at its chosen ``rank``.

    Args:
        cand: the layer's candidate (cost model, energy curve ``(R,)`` of its decomposition).
        rank: the chosen rank; the kept rank is ``max_rank`` where the layer stays dense.
        factorized: whether a low-rank layer was installed.
        dec: the decomposition its factors come from (its route is reported).
        aa_energies: activation-aware energy curves ``(R,)`` by layer name (``None``: no
            statistics were used).
        config: the config of the compression.
    """
    geo = cand.cost.geometry
    kept_rank = rank if factorized else geo.max_rank
    energy = None
    if aa_energies is not None:
        energy = float(aa_energies[cand.name][kept_rank - 1])
    weight_energy = None if config.activation_aware else float(cand.energies[kept_rank - 1])
    has_rows = cand.cost.rows_per_sample is not None
    return LayerReport(
        kind=geo.kind,
        rank=kept_rank,
        max_rank=geo.max_rank,
        factorized=factorized,
        energy_kept=energy,
        weight_energy_kept=weight_energy,
        params_before=geo.dense_params,
        params_after=int(cand.cost.realised(rank, "params")),
        macs_before=cand.cost.dense("flops") if has_rows else None,
        macs_after=cand.cost.realised(rank, "flops") if has_rows else None,
        route=dec.route if factorized else None,
        note=None if factorized else "kept dense: low-rank is not cheaper at this rank",
    )


def fill_totals(
    report: Report,
    candidates: Sequence[LayerCandidate],
    ranks: Sequence[int],
    allocation: Allocation | None,
    config: CompressionConfig,
    has_flops: bool,
) -> None:
    """Set the report's layer-total ratios and, for a budgeted config, its allocation.

    Args:
        has_flops: whether the layers' FLOPs are known (output rows per sample measured).
    """
    before = sum(c.cost.dense("params") for c in candidates)
    after = sum(c.cost.realised(r, "params") for c, r in zip(candidates, ranks, strict=True))
    report.layer_params_ratio = after / before
    if has_flops:
        fb = sum(c.cost.dense("flops") for c in candidates)
        fa = sum(c.cost.realised(r, "flops") for c, r in zip(candidates, ranks, strict=True))
        report.layer_flops_ratio = fa / fb if fb > 0 else 1.0
    if allocation is not None:
        report.metric = config.metric
        report.budget = allocation.budget
        report.achieved = allocation.cost
        report.allocator = {
            "lambda": allocation.lam,
            "iterations": allocation.iterations,
            "total": allocation.total,
        }
        objective = getattr(config, "objective", None)
        if objective is not None:
            report.objective = objective.to_dict()
            if any(c.weight != 1.0 for c in candidates):
                report.objective["weights"] = {c.name: c.weight for c in candidates}
            if any(c.damage is not None for c in candidates):  # (lost energy, divergence) pairs
                report.objective["damage"] = {
                    c.name: [[float(v) for v in row] for row in c.damage]
                    for c in candidates
                    if c.damage is not None
                }
