"""How precisely can this machine measure a latency ratio? An A/A test.

A model is timed against an identical copy of itself (BatchNorm folded in both) with the two
estimators a latency budget is judged by: the median over interleaved rounds of the per-round
ratio (:func:`balf.pipeline.measured_latency_ratio`, what :func:`balf.compress_to_latency`
steers by) and the fastest call of one over the fastest call of the other (the latency
benchmark's ``measured_ratio``). The true ratio is 1; the fraction of measurements within 5 % of
it bounds the within-5 % count any latency budget can show on this machine. Each measurement
times for ``--seconds`` (at least ``--rounds`` rounds), ``--repeats`` times per model, batch size
and estimator. The JSON keeps the CPU's state (load average, governor) before and after.

    python -m balf_paper.experiments.benchmarks.latency_noise \\
        --out results/benchmarks/latency-noise/aa_cpu
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from balf.io.atomic import atomic_json_dump, atomic_write_text
from balf.io.export import fold_batchnorm
from balf.pipeline.latency_loop import measured_latency_ratio
from balf_paper.experiments.environment import cpu_state, environment_info

__all__ = ["fastest_ratio", "main", "measure", "render_markdown"]

ESTIMATORS = ("median of per-round ratios", "fastest / fastest")


def fastest_ratio(
    a: nn.Module, b: nn.Module, x: torch.Tensor, rounds: int, seconds: float
) -> float:
    """Fastest call of ``b(x)`` over fastest call of ``a(x)``, called in turn (one warm-up each)."""
    best = [math.inf, math.inf]
    with torch.inference_mode():
        a(x), b(x)
        begin, done = time.perf_counter(), 0
        while done < rounds or time.perf_counter() - begin < seconds:
            for i, m in enumerate((a, b)):
                start = time.perf_counter()
                m(x)
                best[i] = min(best[i], time.perf_counter() - start)
            done += 1
    return best[1] / best[0]


def measure(
    subjects: Sequence[tuple[str, nn.Module, tuple[int, ...]]],
    batch_sizes: Sequence[int],
    repeats: int,
    rounds: int,
    seconds: float,
) -> list[dict[str, Any]]:
    """One row per (model, batch size, estimator): the ``repeats`` A/A ratios measured."""
    rows = []
    for name, model, shape in subjects:
        for b in batch_sizes:
            x = torch.randn(b, *shape, generator=torch.Generator().manual_seed(b))
            one = fold_batchnorm(model.eval(), x[:1])
            twin = copy.deepcopy(one)
            for estimator in ESTIMATORS:
                ratios = []
                for _ in range(repeats):
                    if estimator == ESTIMATORS[0]:
                        r = measured_latency_ratio(one, twin, x, rounds=rounds, min_time=seconds)
                    else:
                        r = fastest_ratio(one, twin, x, rounds, seconds)
                    ratios.append(r)
                rows.append({
                    "model": name, "batch_size": b, "estimator": estimator, "ratios": ratios,
                    "within_5pct": sum(abs(r - 1) <= 0.05 for r in ratios),
                })  # fmt: skip
    return rows


def render_markdown(results: dict[str, Any]) -> str:
    """The A/A table and the overall within-5 % fraction."""
    lines = [
        "A/A latency test: a model timed against an identical copy (true ratio 1). "
        f"CPU state before {results['cpu_state_start']}, after {results['cpu_state_end']}; "
        f"{results['environment']['torch_threads']} threads.",
        "",
        "| model | batch | estimator | measured ratios | within 5 % |",
        "|---|--:|---|---|--:|",
    ]
    hits = total = 0
    for r in results["rows"]:
        cells = ", ".join(f"{v:.3g}" for v in r["ratios"])
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['estimator']} | {cells} | "
            f"{r['within_5pct']}/{len(r['ratios'])} |"
        )
        hits += r["within_5pct"]
        total += len(r["ratios"])
    lines += ["", f"Within 5 % of the true ratio: {hits} of {total} measurements."]
    return "\n".join(lines) + "\n"


def _subjects(names: Sequence[str]) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    from balf_paper.experiments.tasks.image.data import benchmark_model, experiment_model

    out = []
    for name in names:
        if name.startswith("fashion-mnist:"):
            model, _ = experiment_model("fashion-mnist", name.split(":", 1)[1])
            out.append((name, model, (1, 28, 28)))
        else:
            out.append((name, benchmark_model(name, True, 224), (3, 224, 224)))
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["fashion-mnist:resnet20", "resnet50"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--repeats", type=int, default=5, help="measurements per estimator")
    p.add_argument("--rounds", type=int, default=5, help="at least this many rounds each")
    p.add_argument("--seconds", type=float, default=1.0, help="and at least this long each")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="results/benchmarks/latency-noise/aa_cpu")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure and write ``<out>.json`` and ``<out>.md``."""
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = cpu_state()
    rows = measure(
        _subjects(args.models), args.batch_sizes, args.repeats, args.rounds, args.seconds
    )
    results = {
        "benchmark": "latency_noise",
        "config": vars(args),
        "environment": environment_info("cpu"),
        "cpu_state_start": start,
        "cpu_state_end": cpu_state(),
        "rows": rows,
    }
    out = Path(args.out)
    atomic_json_dump(results, out.with_suffix(".json"))
    atomic_write_text(render_markdown(results), out.with_suffix(".md"))
    return results


if __name__ == "__main__":
    main()
