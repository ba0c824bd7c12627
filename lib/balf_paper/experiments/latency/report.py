"""Markdown tables of the latency-budget rows (:mod:`balf_paper.experiments.latency`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["TOLERANCE", "accuracy_table", "ratio_table", "summary_table"]

TOLERANCE = 0.05
"""Target: measured latency ratio within 5% (relative) of the requested one."""


def done_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that were measured (not skipped)."""
    return [r for r in rows if not r.get("skipped")]


def _ordered(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by model (first appearance), batch size, then decreasing requested ratio."""
    models = {m: i for i, m in enumerate(dict.fromkeys(r["model"] for r in rows))}
    return sorted(rows, key=lambda r: (models[r["model"]], r["batch_size"], -r["requested"]))


def _within(row: dict[str, Any]) -> bool:
    return abs(row["measured_ratio"] / row["requested"] - 1) <= TOLERANCE


def ratio_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: requested vs predicted vs measured latency ratio, both budgets."""
    lines = [
        "Latency budget vs FLOPs budget at the same keep-ratio: whole-model latency ratio "
        "(compressed / original, BatchNorm folded; fastest of interleaved timing rounds).",
        "",
        "| model | batch | requested | latency budget: predicted | latency budget: measured "
        "| within 5% | FLOPs budget: measured | FLOPs budget: FLOPs ratio |",
        "|---|--:|--:|--:|--:|:-:|--:|--:|",
    ]
    by_key = {(r["model"], r["batch_size"], r["mode"], r["requested"]): r for r in done_rows(rows)}
    for r in _ordered(rows):
        if r["mode"] != "latency_auto":
            continue
        if r.get("skipped"):
            lines.append(
                f"| {r['model']} | {r['batch_size']} | {r['requested']:.2f} | unreachable: "
                "below what the measured layers allow | | | | |"
            )
            continue
        f = by_key.get((r["model"], r["batch_size"], "flops_auto", r["requested"]))
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['requested']:.2f} | "
            f"{r['predicted_ratio']:.3f} | {r['measured_ratio']:.3f} | "
            f"{'yes' if _within(r) else 'no'} | "
            f"{f['measured_ratio']:.3f} | {f['flops_ratio']:.3f} |"
            if f
            else f"| {r['model']} | {r['batch_size']} | {r['requested']:.2f} | "
            f"{r['predicted_ratio']:.3f} | {r['measured_ratio']:.3f} | "
            f"{'yes' if _within(r) else 'no'} | | |"
        )
    return "\n".join(lines) + "\n"


def _flops_accuracy_at(rows, model, b, measured) -> float | None:
    pts = sorted(
        (r["measured_ratio"], r["accuracy"])
        for r in done_rows(rows)
        if r["model"] == model
        and r["batch_size"] == b
        and r["mode"] in ("flops_auto", "original")
        and r["accuracy"] is not None
    )
    if len(pts) < 2 or not pts[0][0] <= measured <= pts[-1][0]:
        return None
    xs, ys = zip(*pts, strict=True)
    return float(np.interp(measured, xs, ys))


def accuracy_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: accuracy of the latency budget vs the FLOPs budget at the same measured
    latency (FLOPs-budget accuracy interpolated linearly in the measured ratio)."""
    lines = [
        "Accuracy (%) at matched measured latency: each latency-budget point against the "
        "FLOPs-budget curve interpolated at the same measured latency ratio.",
        "",
        "| model | batch | requested | measured ratio | latency budget | FLOPs budget at that "
        "latency | difference (pp) |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in _ordered(done_rows(rows)):
        if r["mode"] != "latency_auto" or r["accuracy"] is None:
            continue
        other = _flops_accuracy_at(rows, r["model"], r["batch_size"], r["measured_ratio"])
        other_s = f"{100 * other:.2f}" if other is not None else "n/a (outside range)"
        diff_s = f"{100 * (r['accuracy'] - other):+.2f}" if other is not None else ""
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['requested']:.2f} | "
            f"{r['measured_ratio']:.3f} | {100 * r['accuracy']:.2f} | {other_s} | {diff_s} |"
        )
    return "\n".join(lines) + "\n"


def summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown, one line per model and batch size: requested vs measured latency ratios of
    both budgets, how many latency-budget points are within 5%, and (models with accuracy) the
    latency budget's accuracy minus the FLOPs budget's at the same measured latency."""
    lines = [
        "Requested keep-ratio vs measured whole-model latency ratio (BatchNorm folded, fastest "
        "of interleaved rounds); '—' = budget below what the measured layers allow.",
        "",
        "| model | batch | requested | measured, latency budget | within 5% | measured, FLOPs "
        "budget | accuracy Δ at matched latency (pp) |",
        "|---|--:|---|---|:-:|---|---|",
    ]
    keys = list(dict.fromkeys((r["model"], r["batch_size"]) for r in rows))
    done = done_rows(rows)
    for model, b in keys:
        lat = [r for r in _ordered(rows) if (r["model"], r["batch_size"], r["mode"]) == (model, b,
               "latency_auto")]  # fmt: skip
        flops = {r["requested"]: r for r in done if (r["model"], r["batch_size"], r["mode"]) == (
            model, b, "flops_auto")}  # fmt: skip
        requested = " / ".join(f"{r['requested']:g}" for r in lat)
        measured = " / ".join(
            "—" if r.get("skipped") else f"{r['measured_ratio']:.2f}" for r in lat
        )
        hits = sum(1 for r in lat if not r.get("skipped") and _within(r))
        f_measured = " / ".join(
            f"{flops[r['requested']]['measured_ratio']:.2f}" if r["requested"] in flops else "—"
            for r in lat
        )
        deltas = []
        for r in lat:
            other = None
            if not r.get("skipped") and r["accuracy"] is not None:
                other = _flops_accuracy_at(rows, model, b, r["measured_ratio"])
            deltas.append("—" if other is None else f"{100 * (r['accuracy'] - other):+.2f}")
        delta = " / ".join(deltas) if any(d != "—" for d in deltas) else "n/a"
        lines.append(
            f"| {model} | {b} | {requested} | {measured} | {hits}/{len(lat)} | {f_measured} | "
            f"{delta} |"
        )
    return "\n".join(lines) + "\n"
