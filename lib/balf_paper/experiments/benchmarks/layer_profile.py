"""Where a budget cuts: per-layer rank, kept MACs and kept output energy, by depth.

From the :class:`~balf.report.Report` of one compression, :func:`layer_rows` lists every chosen
layer in the model's order with its role (``stem``, ``expand 1x1``, ``depthwise``,
``project 1x1``, ``conv kxk``, ``classifier``...), its rank and maximum rank, its MACs per sample
before and after, and the fraction of its calibration output energy kept (``e_l(r_l)``).
:func:`depth_summary` sums these over equal parts of the depth; :func:`plot_profiles` draws the
energy lost and the MACs kept per layer for several budgets. No evaluation is run: with the
statistics cached this costs seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["depth_summary", "layer_role", "layer_rows", "plot_profiles", "summary_markdown"]


def layer_role(module: nn.Module, first: bool) -> str:
    """A short description of a layer by type and shape (``"depthwise 3x3 s2"``...)."""
    if isinstance(module, nn.Linear):
        return "classifier" if module.out_features >= 1000 else "linear"
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        stride = f" s{module.stride[0]}" if module.stride[0] > 1 else ""
        if module.groups > 1 and module.groups == module.in_channels:
            return f"depthwise {kh}x{kw}{stride}"
        if first:
            return f"stem {kh}x{kw}{stride}"
        if (kh, kw) == (1, 1):
            if module.out_channels > module.in_channels:
                return "expand 1x1"
            return "project 1x1"
        return f"conv {kh}x{kw}{stride}"
    return type(module).__name__


def layer_rows(model: nn.Module, report: Any) -> list[dict[str, Any]]:
    """One dict per chosen layer of ``report``, in ``model``'s module order.

    Keys: ``index`` (0 = first layer), ``name``, ``role``, ``in``/``out`` channels or features,
    ``rank``, ``max_rank``, ``factorized``, ``energy_kept`` (``None`` for data-free modes),
    ``macs_before``, ``macs_after`` (per sample).
    """
    rows = []
    first = True
    for name, module in model.named_modules():
        if name not in report.layers:
            continue
        layer = report.layers[name]
        if isinstance(module, nn.Linear):
            channels = (module.in_features, module.out_features)
        else:
            channels = (module.in_channels, module.out_channels)
        rows.append(
            {
                "index": len(rows),
                "name": name,
                "role": layer_role(module, first),
                "in": channels[0],
                "out": channels[1],
                "rank": layer.rank,
                "max_rank": layer.max_rank,
                "factorized": layer.factorized,
                "energy_kept": layer.energy_kept,
                "macs_before": layer.macs_before,
                "macs_after": layer.macs_after,
            }
        )
        first = False
    return rows


def depth_summary(rows: Sequence[Mapping[str, Any]], parts: int = 4) -> list[dict[str, Any]]:
    """Sum ``rows`` over ``parts`` consecutive, equally long spans of the depth.

    Returns:
        Per span: ``layers`` (first-last index), ``macs_share`` (of all chosen layers' MACs),
        ``macs_kept`` (after/before in the span), ``factorized`` (count), ``energy_lost_max``
        and ``energy_lost_mean`` over the factorized layers (0 when none).
    """
    total = sum(r["macs_before"] or 0 for r in rows) or 1.0
    out = []
    n = len(rows)
    for p in range(parts):
        span = rows[p * n // parts : (p + 1) * n // parts]
        if not span:
            continue
        before = sum(r["macs_before"] or 0 for r in span)
        after = sum(r["macs_after"] or 0 for r in span)
        lost = [
            1 - r["energy_kept"] for r in span if r["factorized"] and r["energy_kept"] is not None
        ]
        out.append(
            {
                "layers": f"{span[0]['index']}-{span[-1]['index']}",
                "macs_share": before / total,
                "macs_kept": after / before if before else 1.0,
                "factorized": sum(bool(r["factorized"]) for r in span),
                "energy_lost_mean": sum(lost) / len(lost) if lost else 0.0,
                "energy_lost_max": max(lost, default=0.0),
            }
        )
    return out


def summary_markdown(profiles: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table: one row per (profile, depth span)."""
    lines = []
    for label, profile in profiles.items():
        if profile.get("accuracy") is not None:
            lines.append(
                f"{label}: top-1 {profile['accuracy']:.2%} ({profile['eval_samples']} images)"
            )
    lines += [
        "" if lines else None,
        "| setting | layers | MACs share | MACs kept | factorized | energy lost (mean / max) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines = [line for line in lines if line is not None]
    for label, profile in profiles.items():
        for s in profile["summary"]:
            lines.append(
                f"| {label} | {s['layers']} | {s['macs_share']:.1%} | {s['macs_kept']:.1%} | "
                f"{s['factorized']} | {s['energy_lost_mean']:.2%} / {s['energy_lost_max']:.2%} |"
            )
    return "\n".join(lines) + "\n"


def plot_profiles(
    profiles: Mapping[str, Mapping[str, Any]], out_stem: str | Path, title: str
) -> list[Path]:
    """Energy lost and MACs kept per layer (x: layer index), one line per profile."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from balf_paper.experiments.render.plot_style import save_figure

    fig = Figure(figsize=(9, 5.5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    for label, profile in profiles.items():
        rows = profile["rows"]
        x = [r["index"] for r in rows]
        lost = [1 - r["energy_kept"] if r["energy_kept"] is not None else 0.0 for r in rows]
        kept = [
            (r["macs_after"] or 0) / r["macs_before"] if r["macs_before"] else 1.0 for r in rows
        ]
        top.plot(x, lost, marker=".", label=label)
        bottom.plot(x, kept, marker=".", label=label)
    top.set_ylabel("output energy lost (1 - e)")
    bottom.set_ylabel("MACs kept")
    bottom.set_xlabel("layer (model order)")
    top.set_title(title, fontsize=9)
    top.legend(fontsize=8)
    return save_figure(fig, out_stem)
