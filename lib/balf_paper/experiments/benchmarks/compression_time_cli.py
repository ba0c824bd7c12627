"""The compression-time benchmark's command line (``scripts/imagenet/measure_compression_time.py``).

Every model is measured (:func:`.compression_time.measure_model`) in a fresh interpreter, this
entry point re-invoking itself with ``--single MODEL --row-out FILE``, so one model's memory peak
cannot mix with another's and each starts with cold caches; ``--in-process`` measures in the
current process instead (debugging only). ``--out`` (default
``results/benchmarks/compression_time.json``) is rewritten atomically after every model:
``{"benchmark", "command", "environment", "config", "rows": [...]}``. ``--resume`` keeps rows
measured with the same settings. A Markdown table is printed at the end (this is a command-line
entry point: its report goes to stdout); the committed tables are rendered by
``balf_paper.experiments.render.tree.render_benchmark``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from balf import _version
from balf.errors import BALFError
from balf.io.atomic import atomic_json_dump
from balf.ranks.configs import MODES
from balf_paper.experiments.benchmarks.compression_time import PHASES, measure_model, settings
from balf_paper.experiments.cli.options import parse_with_yaml
from balf_paper.experiments.environment import command_line, environment_info
from balf_paper.models import IMAGENET_MODELS

__all__ = ["build_parser", "main", "markdown_table"]

log = logging.getLogger("measure_compression_time")

#: What a child interpreter runs: this module's ``main`` on its command-line arguments.
_CHILD = (
    "from balf_paper.experiments.cli.options import run_script; "
    "from balf_paper.experiments.benchmarks.compression_time_cli import main; run_script(main)"
)


def build_parser() -> argparse.ArgumentParser:
    """Options; defaults come from ``configs/imagenet_compression_time.yaml``."""
    p = argparse.ArgumentParser(
        description="Per-phase compression time and peak memory of BALF on ImageNet models.",
    )
    p.add_argument("--models", nargs="+", default=list(IMAGENET_MODELS), help="model names")
    p.add_argument("--mode", default="flops_auto", choices=sorted(MODES))
    p.add_argument("--ratio", type=float, default=0.6, help="the mode's knob (keep-ratio)")
    p.add_argument("--n-iters", type=int, default=300, help="allocator iterations")
    p.add_argument(
        "--calib-size",
        type=int,
        default=None,
        help="calibration images for every model (default: --real-calib-size, or the "
        "synthetic sizes with --synthetic)",
    )
    p.add_argument("--real-calib-size", type=int, default=8192)
    p.add_argument("--synthetic-calib-size", type=int, default=128)
    p.add_argument(
        "--synthetic-calib-sizes",
        nargs="*",
        default=[],
        metavar="MODEL=N",
        help="per-model synthetic calibration sizes, e.g. resnet18=256",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--synthetic", action="store_true", help="random weights and images")
    p.add_argument("--image-size", type=int, default=224, help="synthetic image side")
    p.add_argument("--data-root", default="datasets", help="folder holding imagenet-calib/")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (real mode)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--warmup-batches", type=int, default=1, help="forward batches before timing")
    p.add_argument(
        "--forward-repeats", type=int, default=1, help="plain forward passes (median is reported)"
    )
    p.add_argument("--out", default="results/benchmarks/compression_time.json")
    p.add_argument("--resume", action="store_true", help="skip models already measured")
    p.add_argument("--in-process", action="store_true", help="no subprocess per model")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--single", default=None, help=argparse.SUPPRESS)
    p.add_argument("--row-out", default=None, help=argparse.SUPPRESS)
    return p


def _run_child(argv: Sequence[str], name: str) -> dict[str, Any] | None:
    """Measure ``name`` in a fresh interpreter; the row, or ``None`` if it failed.

    The child imports this same ``balf`` (its folder leads the child's ``PYTHONPATH``).
    """
    lib = str(Path(_version.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (lib, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="balf-ctime-") as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, "-c", _CHILD, *argv, "--single", name, "--row-out", str(out)]
        result = subprocess.run(cmd, check=False, env=env)
        if result.returncode != 0 or not out.exists():
            log.error("%s: measurement failed (exit code %d)", name, result.returncode)
            return None
        return json.loads(out.read_text())


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table (seconds per phase, total, forward, ratio, memory)."""
    head = ["model", "calib", "batch", *PHASES[:5], "total (s)", "forward (s)", "total/fwd"]
    head.append("peak mem (GiB)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        mem = r.get("peak_cuda_gb", r.get("peak_rss_increase_gb"))
        cells = [r["model"], str(r["calib_size"]), str(r["batch_size"])]
        cells += [f"{r['phases'].get(k, float('nan')):.2f}" for k in PHASES[:5]]
        cells += [f"{r['total']:.2f}", f"{r['forward']:.2f}", f"{r['total_over_forward']:.2f}"]
        cells.append(f"{mem:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _load_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text()).get("rows", []))
    except json.JSONDecodeError as exc:
        raise BALFError(f"{path} is not valid JSON ({exc}); move it away or drop --resume") from exc


def _measure_all(args: argparse.Namespace, raw: list[str], results: dict[str, Any]) -> list[str]:
    """Measure every model not already in ``results["rows"]``; the models that failed."""
    rows, out, failed = results["rows"], Path(args.out), []
    for name in args.models:
        wanted = settings(args, name)
        old = [r for r in rows if r["model"] == name]
        if old and all(old[0].get(k) == v for k, v in wanted.items()):
            log.info("%s: already measured, skipped (--resume)", name)
            continue
        log.info("%s: measuring (%s)", name, ", ".join(f"{k}={v}" for k, v in wanted.items()))
        row = measure_model(args, name) if args.in_process else _run_child(raw, name)
        if row is None:
            failed.append(name)
            continue
        row["command"] = command_line(raw)
        rows[:] = [r for r in rows if r["model"] != name] + [row]
        atomic_json_dump(results, out)
        gc.collect()
    return failed


def main(argv: list[str] | None = None) -> int:
    """Measure every model (each in a subprocess) and write the JSON; returns the exit code."""
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_with_yaml(build_parser(), raw, "imagenet_compression_time.yaml")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.single:
        row = measure_model(args, args.single)
        atomic_json_dump(row, Path(args.row_out or f"{args.single}-row.json"))
        return 0

    out = Path(args.out)
    rows = _load_rows(out) if args.resume else []
    results = {
        "benchmark": "compression_time",
        "command": command_line(raw),
        "environment": environment_info(args.device),
        "config": {k: v for k, v in vars(args).items() if k not in ("single", "row_out")},
        "rows": rows,
    }
    failed = _measure_all(args, raw, results)
    order = {name: i for i, name in enumerate(args.models)}
    rows.sort(key=lambda r: order.get(r["model"], len(order)))
    atomic_json_dump(results, out)
    print(markdown_table(rows))
    print(f"\nwritten: {out}")
    if failed:
        print(f"failed: {' '.join(failed)}", file=sys.stderr)
        return 1
    return 0
