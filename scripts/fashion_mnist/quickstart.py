"""Quickstart: BALF versus the SVD baselines on Fashion-MNIST with the committed ResNet-20.

Runs ``flops_auto`` (BALF with a FLOPs budget), ``energy``, ``energy_act_aware`` and ``uniform``
at about six knob values each, evaluates every compressed model on the full test set, and writes
``runs/quickstart/fashion-mnist/resnet20/<mode>/results.json`` (``runs/`` is git-ignored: the
committed reference in ``results/quickstart/`` is never overwritten), plots (PNG + PDF) of
accuracy against the FLOPs and parameter ratios and LaTeX/Markdown tables of the accuracy drop at
matched FLOPs and parameter ratios (``figures/``, ``tables/``; the same renderer as
``scripts/render_results.py``), prints a summary, and ends by comparing the run with the
committed reference (``--reference``). Defaults: ``configs/quickstart.yaml``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from balf_paper.experiments.cli.options import (
    add_common_arguments,
    configure_process,
    parse_with_yaml,
    run_script,
)
from balf_paper.experiments.cli.setting import ImageSetting
from balf_paper.experiments.render.compare import compare_runs
from balf_paper.experiments.render.tables import matched_reduction_table, to_markdown
from balf_paper.experiments.render.tree import render_model
from balf_paper.experiments.sweep.points import read_points

DATASET = "fashion-mnist"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--ratios", nargs="+", type=float, help="flops_auto and uniform ratios")
    parser.add_argument(
        "--energy-thresholds", nargs="+", type=float, help="energy (plain SVD) thresholds"
    )
    parser.add_argument(
        "--energy-act-aware-thresholds",
        nargs="+",
        type=float,
        help="energy_act_aware thresholds",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep points already in the output folder (default: recompute every point)",
    )
    parser.add_argument(
        "--reference",
        default=None,
        help="results root to compare the run with, e.g. results/quickstart ('' to skip)",
    )
    parser.add_argument(
        "--decimals",
        type=int,
        default=4,
        help="numbers agreeing to fewer decimals are listed as differences",
    )
    args = parse_with_yaml(parser, argv, "quickstart.yaml")
    configure_process(args)
    setting = ImageSetting(args, DATASET)
    calibration = setting.clean()
    runner = setting.runner(calibration)
    out = Path(args.out_root) / DATASET / args.model
    plan = {
        "flops_auto": args.ratios,
        "energy": args.energy_thresholds,
        "energy_act_aware": args.energy_act_aware_thresholds,
        "uniform": args.ratios,
    }
    if not args.resume:  # a first run computes everything, even over committed results
        for mode in plan:
            (out / mode / "results.json").unlink(missing_ok=True)
    results = {
        mode: setting.sweep(runner, setting.config(calibration, mode, knobs), out / mode)
        for mode, knobs in plan.items()
    }

    written = [out / mode / "results.json" for mode in plan]
    written += render_model(out, DATASET, args.model, modes=list(plan))
    table = matched_reduction_table(results, "flops")

    print(f"\n{DATASET} / {args.model}: accuracy of every point\n")
    print("| mode | knob | FLOPs ratio | params ratio | accuracy (%) |")
    print("|---|--:|--:|--:|--:|")
    for mode, res in results.items():
        for p in read_points(res):
            knob = p.knob if isinstance(p.knob, str) else f"{p.knob:g}"
            print(
                f"| {mode} | {knob} | {p.flops_ratio:.3f} | {p.params_ratio:.3f} | "
                f"{100 * p.accuracy:.2f} |"
            )
    print("\nAccuracy drop (pp) of the best point at or below each FLOPs keep-ratio:\n")
    print(to_markdown(table))
    print("Written:", *map(str, written), sep="\n  ")
    if args.reference:
        reference = Path(args.reference) / DATASET / args.model
        if reference.resolve() == out.resolve():
            print(f"\nNot compared: the run was written over the reference ({reference}).")
        else:
            comparison = compare_runs(out, reference, list(plan), args.decimals)
            print(f"\nComparison with the reference: {comparison.summary()}")


if __name__ == "__main__":
    run_script(main)
