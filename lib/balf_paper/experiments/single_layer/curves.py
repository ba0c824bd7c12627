"""Output errors of plain SVD and activation-aware factors of one layer, at every kept-rank ratio.

The normalised output error is ``‖Y − Ŷ‖² / ‖Y‖²`` (``Y``: the dense layer's pre-bias outputs,
``Ŷ``: the rank-r layer's; the bias is kept as is, so it cancels in ``Y − Ŷ``), at ``r = ⌈ratio·R⌉``
(the rule of ``balf.RankRatioConfig``), on the calibration and the held-out inputs. The library's
own code path is used: ``balf.collect_statistics``, ``balf.decompose_layer`` (statistics, or
``None`` for plain SVD) and ``balf.factorize_layer``. On the calibration data the
activation-aware error is the Eckart–Young minimum ``1 − e(r)`` (stored as ``bound``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from balf.calibration.collect import collect_statistics
from balf.decomposition import decompose_layer
from balf.layers.dispatch import geometry_of
from balf.layers.factorize import factorize_layer
from balf.ranks.rules import rank_ratio_rank
from balf_paper.experiments.single_layer.cases import LayerCase

__all__ = ["curves_table", "dense_outputs", "layer_curves", "output_error"]


def dense_outputs(layer: nn.Module, x: Tensor, batch_size: int) -> tuple[Tensor, float]:
    """The dense layer's outputs ``Y`` (same leading dims as ``x``) and ``‖Y − bias‖²``."""
    device = next(layer.parameters()).device
    outs, norm = [], 0.0
    with torch.no_grad():
        for xb in x.split(batch_size):
            y = layer(xb.to(device))
            y_pre = y
            if layer.bias is not None:
                shape = (-1, 1, 1) if isinstance(layer, nn.Conv2d) else (-1,)
                y_pre = y - layer.bias.view(shape)
            norm += y_pre.double().square().sum().item()
            outs.append(y)
    return torch.cat(outs), norm


def output_error(approx: nn.Module, x: Tensor, y: Tensor, y_norm: float, batch_size: int) -> float:
    """``‖Y − Ŷ‖² / ‖Y_pre-bias‖²`` of ``approx`` on inputs ``x`` given the dense outputs ``y``."""
    device = y.device
    num = 0.0
    with torch.no_grad():
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
            num += (yb - approx(xb.to(device))).double().square().sum().item()
    return num / y_norm if y_norm > 0 else 0.0


def layer_curves(case: LayerCase, ratios: Sequence[float], batch_size: int) -> dict[str, Any]:
    """Errors of both factorizations of ``case.layer`` at every ratio (see the module doc).

    Returns:
        the JSON entry of the layer: ``panel``, ``name``, ``description``, ``geometry``,
        ``calibration_rows``, ``heldout_rows`` and ``points`` (one per ratio).
    """
    layer = case.layer.eval()
    stats = collect_statistics(
        nn.Sequential(layer), case.calibration, batch_size=batch_size, progress=False
    )
    decs = {
        "svd": decompose_layer(layer, None),
        "act_aware": decompose_layer(layer, stats.layers["0"]),
    }
    energies = decs["act_aware"].energies().cpu()
    splits = {
        "calibration": (case.calibration, *dense_outputs(layer, case.calibration, batch_size)),
        "heldout": (case.heldout, *dense_outputs(layer, case.heldout, batch_size)),
    }
    geo = geometry_of(layer)
    points = []
    for ratio in ratios:
        rank = rank_ratio_rank(geo, ratio)
        point: dict[str, Any] = {
            "ratio": ratio,
            "rank": rank,
            "rank_fraction": rank / geo.max_rank,
            "bound": max(0.0, 1.0 - float(energies[rank - 1])),
        }
        for method, dec in decs.items():
            approx = factorize_layer(layer, dec, rank).eval()
            point[method] = {
                split: output_error(approx, x, y, norm, batch_size)
                for split, (x, y, norm) in splits.items()
            }
        points.append(point)
    rows_per_sample = stats.rows_per_sample("0")
    return {
        "panel": case.panel,
        "name": case.name,
        "description": case.description,
        "geometry": {
            "groups": geo.groups,
            "in_dim": geo.in_dim,
            "out_dim": geo.out_dim,
            "max_rank": geo.max_rank,
        },
        "calibration_rows": int(rows_per_sample * len(case.calibration)),
        "heldout_rows": int(rows_per_sample * len(case.heldout)),
        "points": points,
    }


def curves_table(layer: dict[str, Any]) -> str:
    """One layer's entry as a plain-text table (ratio, rank, the four errors, the bound)."""
    lines = [
        f"{layer['panel']:>12}  {layer['description']}",
        "    ratio  rank   svd(held)  aa(held)   svd(cal)   aa(cal)    bound",
    ]
    for p in layer["points"]:
        lines.append(
            f"    {p['ratio']:5.2f}  {p['rank']:4d}  {p['svd']['heldout']:9.4f}  "
            f"{p['act_aware']['heldout']:9.4f}  {p['svd']['calibration']:9.4f}  "
            f"{p['act_aware']['calibration']:9.4f}  {p['bound']:7.4f}"
        )
    return "\n".join(lines)
