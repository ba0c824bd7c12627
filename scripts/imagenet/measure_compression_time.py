"""Compression time and peak memory of BALF per phase, for every ImageNet model (experiment 5).

For each model, one ``balf.Compressor`` run (default ``flops_auto`` at 0.6, the paper's setting:
8192 calibration images, batch 64) is timed per phase from ``Report.timings``: ``statistics``
(the calibration forward pass with hooks), ``decomposition`` (per-layer eigendecompositions),
``allocation`` (rank selection), ``replacement`` (deep copy + installing the low-rank layers) and
``measurement`` (FLOP/parameter counting of the result). ``total`` is the wall time of building
the Compressor and running ``compress`` (so the phases sum to at most ``total``). In the same
process, a plain forward pass over the same calibration batches (eval, ``no_grad``, no hooks) is
timed afterwards (median of ``--forward-repeats`` passes); ``total_over_forward`` is their ratio.

Peak memory: on the CPU the peak resident set size (``VmHWM`` of ``/proc/self/status``, else
``getrusage``) minus a baseline taken with the model and the calibration data loaded (after one
warm-up batch). ``VmHWM`` is the peak over the process lifetime, so it is reset at the baseline
through ``/proc/self/clear_refs`` where the kernel allows it (``rss_peak_reset`` in the row);
otherwise the increase is relative to the earlier peak and may be underestimated. On CUDA,
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (``peak_cuda_gb``, and
``cuda_increase_gb`` over the baseline). Memory is in GiB (2^30 bytes).

Every model is measured in a fresh subprocess (this script re-invoking itself with
``--single MODEL --row-out FILE``), so one model's memory peak cannot mix with another's and
each starts with cold caches. ``--in-process`` measures in the current process instead
(debugging only).

``--synthetic`` needs no ImageNet: random weights and seeded random calibration images of
``--image-size`` pixels. Real mode uses the pretrained weights and the ImageNet calibration
folder (``<data-root>/imagenet-calib``) with the model's evaluation preprocessing.

Output: ``--out`` (default ``results/benchmarks/compression_time.json``), rewritten atomically
after every model: ``{"benchmark", "command", "environment", "config", "rows": [...]}``, one row
per model (fields listed in :func:`measure_model`). ``--resume`` keeps rows measured with the
same settings and skips those models. A Markdown table is printed at the end.

Example:
    python scripts/imagenet/measure_compression_time.py --synthetic --models resnet18 resnet50
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import balf
from balf._io import atomic_json_dump
from balf.data import make_loader
from balf.errors import BALFError
from balf.experiments.cli import parse_with_yaml, run_script
from balf.experiments.datasets import benchmark_model, experiment_data
from balf.experiments.environment import command_line, environment_info
from balf.models import IMAGENET_MODELS
from balf.statistics import iter_batches

log = logging.getLogger("measure_compression_time")

GIB = float(1 << 30)
PHASES = ("statistics", "decomposition", "allocation", "copy", "replacement", "measurement")


def build_parser() -> argparse.ArgumentParser:
    """Options; defaults come from ``configs/imagenet_compression_time.yaml``."""
    p = argparse.ArgumentParser(
        description="Per-phase compression time and peak memory of BALF on ImageNet models.",
    )
    p.add_argument("--models", nargs="+", default=list(IMAGENET_MODELS), help="model names")
    p.add_argument("--mode", default="flops_auto", choices=sorted(balf.MODES))
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


# -- models and data ---------------------------------------------------------------------------


def calib_size_for(args: argparse.Namespace, name: str) -> int:
    """The calibration size of ``name`` under the options (see ``--calib-size``)."""
    if args.calib_size is not None:
        return args.calib_size
    if not args.synthetic:
        return args.real_calib_size
    return _model_sizes(args.synthetic_calib_sizes).get(name, args.synthetic_calib_size)


def _model_sizes(spec: Iterable[str] | dict[str, int]) -> dict[str, int]:
    if isinstance(spec, dict):
        return {str(k): int(v) for k, v in spec.items()}
    out = {}
    for item in spec:
        key, sep, value = str(item).partition("=")
        if not sep:
            raise BALFError(f"--synthetic-calib-sizes: expected MODEL=N, got {item!r}")
        out[key] = int(value)
    return out


def calibration_data(
    args: argparse.Namespace, name: str, size: int
) -> tuple[Tensor | Iterable, str]:
    """Calibration batches and their identity.

    Returns:
        synthetic: a seeded ``(size, 3, S, S)`` tensor of standard-normal pixels (split into
        batches by the consumers); real: a DataLoader over ``size`` ImageNet calibration images.
    """
    if args.synthetic:
        g = torch.Generator().manual_seed(args.seed)
        images = torch.randn(size, 3, args.image_size, args.image_size, generator=g)
        return images, f"synthetic-{args.image_size}px-seed{args.seed}"
    data = experiment_data("imagenet", args.data_root, name, size, args.seed)
    return make_loader(data.calibration, args.batch_size, args.workers), data.data_tag


# -- memory ------------------------------------------------------------------------------------


def _status_bytes(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``VmHWM``, else ``getrusage``)."""
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs``); whether it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_pass(
    model: nn.Module, data: Tensor | Iterable, device: torch.device, batch_size: int
) -> float:
    """Seconds of one plain forward pass over ``data`` (eval, no grad, no hooks)."""
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for x in iter_batches(data, device, batch_size):
            model(x)
    _sync(device)
    return time.perf_counter() - start


def _warmup(model: nn.Module, data, device: torch.device, batch_size: int, n: int) -> None:
    with torch.no_grad():
        for i, x in enumerate(iter_batches(data, device, batch_size)):
            if i >= n:
                break
            model(x)
    _sync(device)


# -- one model ---------------------------------------------------------------------------------


def settings(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """What a row was measured with (must match for ``--resume`` to keep it)."""
    return {
        "mode": args.mode,
        "ratio": args.ratio,
        "n_iters": args.n_iters,
        "calib_size": calib_size_for(args, name),
        "batch_size": args.batch_size,
        "image_size": args.image_size if args.synthetic else 224,
        "synthetic": bool(args.synthetic),
        "device": str(torch.device(args.device)),
    }


def measure_model(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Compress ``name`` once and time it; returns the result row.

    Row fields: ``model``, ``mode``, ``ratio``, ``n_iters``, ``calib_size``, ``batch_size``,
    ``image_size``, ``synthetic``, ``data`` (calibration identity), ``device``, ``phases``
    (seconds per phase), ``total`` (s), ``forward`` (s), ``total_over_forward``,
    ``forward_runs`` (s, every pass), ``peak_rss_increase_gb``, ``rss_baseline_gb``,
    ``rss_peak_gb``, ``rss_peak_reset``, on CUDA ``peak_cuda_gb`` and ``cuda_increase_gb``,
    ``model_flops_ratio``, ``model_params_ratio``, ``factorized_layers``, ``layers``,
    ``environment`` (``command`` is added by the parent process).
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    size = calib_size_for(args, name)
    model = benchmark_model(name, args.synthetic, args.image_size).to(device)
    data, tag = calibration_data(args, name, size)
    _warmup(model, data, device, args.batch_size, args.warmup_batches)
    gc.collect()

    reset = reset_peak_rss()
    rss_base = peak_rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        cuda_base = torch.cuda.memory_allocated(device)

    mode = balf.MODES[args.mode]
    extra = {"n_iters": args.n_iters} if mode.accepts("n_iters") else {}
    config = mode.make(args.ratio, **extra)
    _sync(device)
    start = time.perf_counter()
    compressor = balf.Compressor(
        model, data, batch_size=args.batch_size, progress=not args.no_progress
    )
    small, report = compressor.compress(config)
    _sync(device)
    total = time.perf_counter() - start
    rss_peak = peak_rss_bytes()
    row: dict[str, Any] = {}
    if device.type == "cuda":
        cuda_peak = torch.cuda.max_memory_allocated(device)
        row["peak_cuda_gb"] = cuda_peak / GIB
        row["cuda_increase_gb"] = (cuda_peak - cuda_base) / GIB
    del small, compressor
    gc.collect()

    forwards = [
        forward_pass(model, data, device, args.batch_size)
        for _ in range(max(1, args.forward_repeats))
    ]
    forward = statistics.median(forwards)
    phases = {k: float(report.timings[k]) for k in PHASES if k in report.timings}
    return {
        "model": name,
        **settings(args, name),
        "data": tag,
        "phases": phases,
        "total": total,
        "forward": forward,
        "forward_runs": forwards,
        "total_over_forward": total / forward,
        "peak_rss_increase_gb": (rss_peak - rss_base) / GIB,
        "rss_baseline_gb": rss_base / GIB,
        "rss_peak_gb": rss_peak / GIB,
        "rss_peak_reset": reset,
        **row,
        "model_flops_ratio": report.model_flops_ratio,
        "model_params_ratio": report.model_params_ratio,
        "factorized_layers": sum(lr.factorized for lr in report.layers.values()),
        "layers": len(report.layers),
        "environment": environment_info(device),
    }


def _run_child(argv: Sequence[str], name: str) -> dict[str, Any] | None:
    """Measure ``name`` in a fresh interpreter; the row, or ``None`` if it failed."""
    with tempfile.TemporaryDirectory(prefix="balf-ctime-") as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
        cmd += ["--single", name, "--row-out", str(out)]
        result = subprocess.run(cmd, check=False)
        if result.returncode != 0 or not out.exists():
            log.error("%s: measurement failed (exit code %d)", name, result.returncode)
            return None
        return json.loads(out.read_text())


# -- all models --------------------------------------------------------------------------------


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
    failed = []
    for name in args.models:
        wanted = settings(args, name)
        old = [r for r in rows if r["model"] == name]
        if old and all(old[0].get(k) == v for k, v in wanted.items()):
            log.info("%s: already measured, skipped (--resume)", name)
            continue
        log.info("%s: measuring (%s)", name, ", ".join(f"{k}={v}" for k, v in wanted.items()))
        if args.in_process:
            row = measure_model(args, name)
        else:
            row = _run_child(raw, name)
        if row is None:
            failed.append(name)
            continue
        row["command"] = command_line(raw)
        rows[:] = [r for r in rows if r["model"] != name] + [row]
        atomic_json_dump(results, out)
        gc.collect()
    order = {name: i for i, name in enumerate(args.models)}
    rows.sort(key=lambda r: order.get(r["model"], len(order)))
    atomic_json_dump(results, out)
    print(markdown_table(rows))
    print(f"\nwritten: {out}")
    if failed:
        print(f"failed: {' '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_script(main)
