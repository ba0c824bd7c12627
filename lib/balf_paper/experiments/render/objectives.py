"""The allocation-objectives and refit study (issue 31): one table per network, from the results.

For every network of the study, the rows are the budgeted modes that share a knob with the FLOPs
(or parameters) budget — the paper's objective, the new objectives, and each with the
layer-sequential refit (``<mode>+refit`` run folders) — and the columns the budgets; a cell is
the evaluated metric and, for image models, the drop from the uncompressed model. On the image
networks, rules whose knob is not the budget (energy thresholds, uniform rules) are compared at
matched budgets in each study's own ``tables/matched_*.md``; on the language models every rule's
knob is the parameter ratio, so the uniform and energy rules are rows too. Usage::

    python -m balf_paper.experiments.render.objectives [RESULTS_ROOT]

writes ``<RESULTS_ROOT>/objectives/tables/<network>.md`` (default root: ``results``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from balf.io.atomic import atomic_write_text
from balf_paper.experiments.render.loaders import load_mode_results
from balf_paper.experiments.render.tables import mode_label
from balf_paper.experiments.sweep.points import ResultPoint, read_points
from balf_paper.experiments.sweep.seeds import with_seeds

__all__ = ["STUDY", "main", "render_study"]

_IMAGE_MODES = (
    "flops_auto",
    "flops_auto_log_energy",
    "flops_auto_sensitivity",
    "flops_auto_log_sensitivity",
    "flops_auto_fisher",
    "flops_auto_damage",
    "flops_auto_selected",
    "flops_auto+refit",
    "flops_auto_sensitivity+refit",
    "flops_auto_fisher+refit",
    "flops_auto_damage+refit",
    "flops_auto_selected+refit",
)
_LANGUAGE_MODES = (  # every language rule's knob is the parameter ratio
    "uniform_act_aware",
    "energy_act_aware",
    "params_auto",
    "params_auto_log_energy",
    "params_auto_sensitivity",
    "params_auto_log_sensitivity",
    "params_auto_fisher",
    "params_auto_damage",
    "params_auto_selected",
)

#: ``(name, results folder, modes, metric, higher is better)`` of every network of the study.
STUDY = (
    ("mobilenet_v2_q8", "imagenet-samples/mobilenet_v2_q8", _IMAGE_MODES, "accuracy", True),
    ("efficientnet_lite0", "imagenet-samples/efficientnet_lite0", _IMAGE_MODES, "accuracy", True),
    ("resnet20", "cifar10-jpeg/resnet20", _IMAGE_MODES, "accuracy", True),
    ("resnet56", "cifar10-jpeg/resnet56", _IMAGE_MODES, "accuracy", True),
    ("smollm2_whole", "language/wikitext/whole", _LANGUAGE_MODES, "perplexity", False),
    ("smollm2_block", "language/wikitext/block", _LANGUAGE_MODES, "perplexity", False),
    ("smollm2_block_refit", "language/wikitext/block-refit", _LANGUAGE_MODES, "perplexity",
     False),  # fmt: skip
    ("minilm_whole", "language/stsb/whole", _LANGUAGE_MODES, "spearman", True),
    ("minilm_block", "language/stsb/block", _LANGUAGE_MODES, "spearman", True),
)


def _value(point: ResultPoint, metric: str) -> float | None:
    value = point.metrics.get(metric)
    return None if value is None else float(value)


def _cell(point: ResultPoint, dense: float | None, metric: str) -> str:
    value = _value(point, metric)
    if value is None:
        return "—"
    if metric == "accuracy":
        text = f"{100 * value:.2f}"
        if dense is not None:
            text += f" ({100 * (value - dense):+.2f})"
        return text
    return f"{value:.4f}" if metric == "spearman" else f"{value:.2f}"


def network_table(folder: Path, modes: Sequence[str], metric: str) -> str | None:
    """The markdown table of one network (``None`` when none of ``modes`` has results)."""
    found = with_seeds(folder, load_mode_results(folder, modes))
    if not found:
        return None
    dense, by_mode = None, {}
    for mode, results in found.items():
        points = read_points(results)
        for p in points:
            if p.knob == "original" and dense is None:
                dense = _value(p, metric)
        by_mode[mode] = {p.knob: p for p in points if p.knob != "original"}
    knobs = sorted({k for pts in by_mode.values() for k in pts}, reverse=True)
    head = f"| mode | {' | '.join(f'{k:g}' for k in knobs)} |"
    lines = [head, "|---|" + "---|" * len(knobs)]
    for mode in (m for m in modes if m in by_mode):
        cells = [_cell(by_mode[mode][k], dense, metric) if k in by_mode[mode] else "—"
                 for k in knobs]  # fmt: skip
        lines.append(f"| {mode_label(mode)} | " + " | ".join(cells) + " |")
    if dense is not None:
        shown = f"{100 * dense:.2f}" if metric == "accuracy" else f"{dense:.4g}"
        lines.append(f"| uncompressed | {shown} (all budgets) |" + " |" * (len(knobs) - 1))
    return "\n".join(lines) + "\n"


#: Modes whose objective measures something before allocating.
_MEASURING = ("sensitivity", "fisher", "damage", "selected")

#: The phases a cost table shows: what every mode measures once, and what it adds.
_COST_PHASES = ("statistics", "sensitivity", "selection")


def cost_table(folder: Path, modes: Sequence[str]) -> str | None:
    """Seconds each mode spent measuring, from its points' timings (``None``: no timings).

    ``statistics`` and ``sensitivity`` (probes, first-order estimates, damage points) are paid
    once per model and calibration set (the first point; cached after): a mode run after
    another of the same run reads them from that mode (``(earlier mode)``). ``selection`` is
    paid per budget (the mean over the points). Times are those of the run's machine (see the
    study's README for its load).
    """
    found = with_seeds(folder, load_mode_results(folder, modes))
    rows = []
    for mode in (m for m in modes if m in found):
        points = [p for p in read_points(found[mode]) if p.knob != "original" and p.timings]
        if not points:
            continue
        once = {k: max(float(p.timings.get(k, 0.0)) for p in points) for k in _COST_PHASES[:2]}
        per = [float(p.timings.get("selection", 0.0)) for p in points]
        measures = any(m in mode for m in _MEASURING)
        cells = [
            f"{once['statistics']:.1f}" if once["statistics"] else "(earlier mode)",
            f"{once['sensitivity']:.1f}" if once["sensitivity"]
            else ("(earlier mode)" if measures else "—"),
            f"{sum(per) / len(per):.1f}" if any(per) else "—",
        ]  # fmt: skip
        rows.append(f"| {mode_label(mode)} | " + " | ".join(cells) + " |")
    if not rows:
        return None
    head = (
        "| mode | statistics (s, once) | objective's measurement (s, once) "
        "| selection (s per budget) |"
    )
    return "\n".join([head, "|---|--:|--:|--:|", *rows]) + "\n"


def render_study(root: Path) -> list[Path]:
    """Write every network's table under ``<root>/objectives/tables/``; the files written."""
    written = []
    for name, folder, modes, metric, _ in STUDY:
        table = network_table(root / folder, modes, metric)
        if table is None:
            continue
        path = root / "objectives" / "tables" / f"{name}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(table, path)
        written.append(path)
        costs = cost_table(root / folder, modes)
        if costs is not None:
            path = root / "objectives" / "tables" / f"{name}_cost.md"
            atomic_write_text(costs, path)
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    root = Path(args[0]) if args else Path("results")
    for path in render_study(root):
        print(path)


if __name__ == "__main__":
    main()
