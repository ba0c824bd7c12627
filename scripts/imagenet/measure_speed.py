"""Inference speed of original and BALF-compressed models (experiment 6).

For each model (default ``resnet50`` and ``vit_b_16``) one ``balf.Compressor`` produces the
``flops_auto`` models at every keep-ratio (default 0.9 … 0.3); the statistics and decompositions
are computed once. The latency of the original and of each compressed model is measured at every
batch size (default 1, 8, 32) on a random input batch: ``--warmup`` untimed calls, then
``--repeats`` timed calls (``torch.inference_mode()``, eval mode, ``torch.cuda.synchronize`` on
CUDA); the median is reported, with throughput = batch size / median latency (images/s).

``--synthetic`` uses random weights and seeded random calibration images (``--calib-size``,
``--image-size``); otherwise the pretrained weights and the ImageNet calibration folder
(``<data-root>/imagenet-calib``), with the sweeps' statistics cache (``--cache-root``) unless
``--no-cache``. ``--channels-last`` runs CNNs (models with a Conv2d) in channels-last layout.

Outputs in ``--out-dir`` (default ``results/benchmarks``), ``<device>`` being ``cpu``/``cuda``:

- ``speed_<device>.json``: ``{"benchmark", "command", "environment", "config", "rows": [...]}``,
  rewritten atomically after every model; one row per (model, variant, batch size) with
  ``model``, ``variant`` (``"original"`` or ``"flops_auto@<ratio>"``), ``keep_ratio`` (``None``
  for the original), ``flops``, ``params``, ``flops_ratio``, ``params_ratio`` (whole model,
  measured), ``flops_reduction`` (1 / flops_ratio), ``batch_size``, ``latency_s`` (median),
  ``latencies_s`` (every repeat), ``throughput`` (images/s), ``speedup`` (original latency /
  this latency at the same batch size), ``channels_last``, ``image_size``;
- ``speed_<device>.pdf`` / ``.png``: measured speedup vs FLOPs reduction, one panel per model,
  one line per batch size, and the ideal y = x. ``--plot-only`` re-renders them from the JSON.

Inference benchmarks fold BatchNorm into the preceding convolution in both the original and the
compressed models (``torch.nn.utils.fusion.fuse_conv_bn_eval``; ``--no-fold-bn`` to time them
unfolded, as the committed ``speed_cpu.json`` was).

Latency mode (``--mode latency_auto``, see :mod:`balf.experiments.latency_budget`): per model
and batch size the chosen layers' latencies are measured (``--rank-multiple``,
``--latency-points``, ``--min-run-time``, cached in ``--latency-cache``), the model is
compressed with a latency budget and with a FLOPs budget at every ``--ratios`` value, and every
variant is timed end to end; ``latency_<device>.{json,md,png,pdf}`` hold requested, predicted
and measured latency ratios. Model names ``fashion-mnist:resnet20``/``fashion-mnist:resnet56``
take the trained Fashion-MNIST checkpoints and calibration images and add the test accuracy
(``--eval-size`` for a subset), compared at matched measured latency in
``latency_accuracy_<device>.md``.

Example:
    python scripts/imagenet/measure_speed.py --synthetic --calib-size 32 --batch-sizes 1 8
    python scripts/imagenet/measure_speed.py --mode latency_auto --synthetic --calib-size 64 \
        --models resnet50 --ratios 0.8 0.6 --batch-sizes 1 8 32
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

import balf
from balf._io import atomic_json_dump, atomic_write_text
from balf.data import make_loader
from balf.experiments import latency_budget
from balf.experiments.cli import parse_with_yaml, run_script
from balf.experiments.datasets import benchmark_model, experiment_data, experiment_model
from balf.experiments.environment import command_line, environment_info
from balf.experiments.evaluation import evaluate
from balf.experiments.plots import save_figure
from balf.export import fold_batchnorm

log = logging.getLogger("measure_speed")


def build_parser() -> argparse.ArgumentParser:
    """Options; defaults come from ``configs/imagenet_measure_speed.yaml``."""
    p = argparse.ArgumentParser(
        description="Latency and throughput of original and BALF-compressed models."
    )
    p.add_argument("--models", nargs="+", default=["resnet50", "vit_b_16"])
    p.add_argument("--ratios", nargs="+", type=float, default=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    p.add_argument(
        "--mode", default="flops_auto", choices=["flops_auto", "params_auto", "latency_auto"]
    )
    p.add_argument(
        "--fold-bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fold BatchNorm into the preceding convs before timing (default: on)",
    )
    g = p.add_argument_group("latency mode (--mode latency_auto)")
    g.add_argument("--rank-multiple", type=int, default=1, help="ranks are multiples of this")
    g.add_argument("--latency-points", type=int, default=12, help="measured ranks per layer")
    g.add_argument("--min-run-time", type=float, default=0.05, help="seconds per layer measurement")
    g.add_argument("--latency-cache", default=None, help="folder of the latency cache")
    g.add_argument(
        "--min-time",
        type=float,
        default=0.0,
        help="time more interleaved rounds (beyond --repeats) until this many seconds are spent",
    )
    g.add_argument(
        "--eval-size", type=int, default=None, help="fashion-mnist:* models: test subset size"
    )
    g.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--n-iters", type=int, default=300, help="allocator iterations")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--warmup", type=int, default=5, help="untimed calls before timing")
    p.add_argument("--repeats", type=int, default=20, help="timed calls (median reported)")
    p.add_argument("--synthetic", action="store_true", help="random weights and images")
    p.add_argument("--calib-size", type=int, default=8192, help="calibration images")
    p.add_argument("--calib-batch-size", type=int, default=64, help="calibration batch size")
    p.add_argument("--image-size", type=int, default=224, help="synthetic image side")
    p.add_argument("--data-root", default="datasets", help="folder holding imagenet-calib/")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (real mode)")
    p.add_argument("--cache-root", default=".", help="folder of activation-cache/ (real mode)")
    p.add_argument("--no-cache", action="store_true", help="do not cache statistics")
    p.add_argument("--channels-last", action="store_true", help="channels-last CNNs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out-dir", default="results/benchmarks")
    p.add_argument("--plot-only", action="store_true", help="re-render the plot from the JSON")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


# -- models and data ---------------------------------------------------------------------------


def calibration(args: argparse.Namespace, name: str) -> tuple[Tensor | Iterable, balf.Cache | None]:
    """Calibration data (a seeded ``(N, 3, S, S)`` tensor, or a DataLoader) and the cache."""
    if args.synthetic:
        g = torch.Generator().manual_seed(args.seed)
        size = args.image_size
        return torch.randn(args.calib_size, 3, size, size, generator=g), None
    data = experiment_data("imagenet", args.data_root, name, args.calib_size, args.seed)
    loader = make_loader(data.calibration, args.calib_batch_size, args.workers)
    cache = None if args.no_cache else balf.Cache(args.cache_root, data.data_tag, args.calib_size)
    return loader, cache


# -- timing ------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latencies(
    model: nn.Module, x: Tensor, warmup: int, repeats: int, device: torch.device
) -> list[float]:
    """Seconds of ``repeats`` timed forward calls on ``x`` after ``warmup`` untimed ones.

    Args:
        model: the network, in eval mode on ``device``.
        x: an input batch ``(B, 3, S, S)`` on ``device``.
    """
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        _sync(device)
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            _sync(device)
            out.append(time.perf_counter() - start)
    return out


def _is_cnn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules()) and not any(
        isinstance(m, nn.MultiheadAttention | timm.layers.Attention) for m in model.modules()
    )


def measure_model(args: argparse.Namespace, name: str) -> list[dict[str, Any]]:
    """Compress ``name`` at every ratio and time every variant at every batch size."""
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = benchmark_model(name, args.synthetic, args.image_size).to(device)
    channels_last = bool(args.channels_last and _is_cnn(model))
    size = args.image_size if args.synthetic else 224
    example = torch.randn(1, 3, size, size, device=device)
    flops0, params0 = balf.count_flops(model, example), balf.count_params(model)
    data, cache = calibration(args, name)
    compressor = balf.Compressor(
        model,
        data,
        cache=cache,
        batch_size=args.calib_batch_size,
        progress=not args.no_progress,
    )
    g = torch.Generator().manual_seed(args.seed + 1)
    inputs = {b: torch.randn(b, 3, size, size, generator=g).to(device) for b in args.batch_sizes}
    if channels_last:
        inputs = {b: x.contiguous(memory_format=torch.channels_last) for b, x in inputs.items()}

    def timed(m: nn.Module, variant: str, ratio: float | None, flops: int, params: int):
        m = m.eval()
        if args.fold_bn:
            m = fold_batchnorm(m, example)
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        for b, x in inputs.items():
            times = latencies(m, x, args.warmup, args.repeats, device)
            latency = statistics.median(times)
            log.info("%s %s batch %d: %.2f ms", name, variant, b, 1e3 * latency)
            rows.append(
                {
                    "model": name,
                    "variant": variant,
                    "keep_ratio": ratio,
                    "flops": flops,
                    "params": params,
                    "flops_ratio": flops / flops0,
                    "params_ratio": params / params0,
                    "flops_reduction": flops0 / flops,
                    "batch_size": b,
                    "latency_s": latency,
                    "latencies_s": times,
                    "throughput": b / latency,
                    "speedup": base[b] / latency if b in base else 1.0,
                    "channels_last": channels_last,
                    "image_size": size,
                    "fold_bn": args.fold_bn,
                }
            )
            if ratio is None:
                base[b] = latency

    rows: list[dict[str, Any]] = []
    base: dict[int, float] = {}
    timed(model, "original", None, flops0, params0)
    extra = {"n_iters": args.n_iters}
    for ratio in args.ratios:
        small, _ = compressor.compress(balf.config_for_mode(args.mode, ratio, **extra))
        flops = balf.count_flops(small, example)
        timed(small, f"{args.mode}@{ratio:g}", ratio, flops, balf.count_params(small))
        del small
    return rows


# -- plot --------------------------------------------------------------------------------------


def plot_speedup(results: dict[str, Any], stem: Path) -> list[Path]:
    """Speedup vs FLOPs reduction (one panel per model, a line per batch size) -> PDF + PNG."""
    rows = results["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig = Figure(figsize=(4.2 * max(1, len(models)), 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(models)), squeeze=False)
    for ax, name in zip(axes[0], models, strict=False):
        mine = [r for r in rows if r["model"] == name]
        top = max([r["flops_reduction"] for r in mine] + [1.0])
        ax.plot([1, top], [1, top], "k--", lw=1, label="ideal (y = x)")
        for b in sorted({r["batch_size"] for r in mine}):
            pts = sorted((r["flops_reduction"], r["speedup"]) for r in mine if r["batch_size"] == b)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=4, label=f"batch {b}")
        ax.set_title(name)
        ax.set_xlabel("FLOPs reduction (original / compressed)")
        ax.set_ylabel("measured speedup")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    device = results.get("environment", {}).get("device", "")
    fig.suptitle(f"BALF inference speedup ({device})")
    fig.tight_layout()
    return save_figure(fig, stem)


def _summary(rows: Sequence[dict[str, Any]]) -> str:
    head = "| model | variant | FLOPs ratio | batch | latency (ms) | images/s | speedup |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['flops_ratio']:.3f} | {r['batch_size']} | "
            f"{1e3 * r['latency_s']:.2f} | {r['throughput']:.1f} | {r['speedup']:.2f} |"
        )
    return "\n".join(lines)


# -- latency mode ------------------------------------------------------------------------------


def latency_subject(args: argparse.Namespace, name: str) -> latency_budget.LatencySubject:
    """A synthetic ImageNet model, or a trained ``fashion-mnist:<arch>`` with its test set."""
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if name.startswith("fashion-mnist:"):
        arch = name.split(":", 1)[1]
        model, _ = experiment_model("fashion-mnist", arch)
        data = experiment_data(
            "fashion-mnist", args.data_root, arch, args.calib_size, args.seed, args.eval_size
        )
        loader = make_loader(data.evaluation, args.eval_batch_size, 0)

        def accuracy(m: nn.Module) -> float:
            return evaluate(m, loader, device, progress=False).accuracy

        calib = make_loader(data.calibration, args.calib_batch_size, 0)
        example = data.evaluation[0][0].unsqueeze(0)
        return latency_budget.LatencySubject(
            name, model.to(device), calib, example.to(device), accuracy
        )
    model = benchmark_model(name, args.synthetic, args.image_size).to(device)
    data, _ = calibration(args, name)
    size = args.image_size if args.synthetic else 224
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(args.seed))
    return latency_budget.LatencySubject(name, model, data, example.to(device))


def run_latency_mode(args: argparse.Namespace, argv: list[str], device: torch.device) -> None:
    """Measure latency budgets for every model; write JSON, Markdown tables and the plot."""
    stem = Path(args.out_dir) / f"latency_{device.type}"
    json_path = stem.with_suffix(".json")
    if args.plot_only:
        results = json.loads(json_path.read_text())
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        results = {
            "benchmark": "latency_budget",
            "command": command_line(argv),
            "environment": environment_info(device),
            "config": vars(args),
            "rows": [],
        }
        for name in args.models:
            results["rows"] += latency_budget.run_latency_budgets(
                latency_subject(args, name),
                args.ratios,
                args.batch_sizes,
                warmup=args.warmup,
                repeats=args.repeats,
                rank_multiple=args.rank_multiple,
                points=args.latency_points,
                min_run_time=args.min_run_time,
                cache_dir=args.latency_cache,
                min_time=args.min_time,
                progress=not args.no_progress,
            )
            atomic_json_dump(results, json_path)
    rows = results["rows"]
    tables = {
        stem.with_suffix(".md"): latency_budget.ratio_table(rows),
        stem.with_name(f"latency_summary_{device.type}.md"): latency_budget.summary_table(rows),
    }
    if any(r["accuracy"] is not None for r in rows):
        accuracy_path = stem.with_name(f"latency_accuracy_{device.type}.md")
        tables[accuracy_path] = latency_budget.accuracy_table(rows)
    for path, text in tables.items():
        atomic_write_text(text, path)
        print(text)
    device_name = results.get("environment", {}).get("device", "")
    paths = latency_budget.plot_latency(rows, stem, f"BALF latency budgets ({device_name})")
    print(f"written: {json_path}, {', '.join(map(str, [*tables, *paths]))}")


def main(argv: list[str] | None = None) -> None:
    """Measure (or, with ``--plot-only``, re-plot) and write JSON + plots."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_with_yaml(build_parser(), argv, "imagenet_measure_speed.yaml")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    device = torch.device(args.device)
    if args.mode == "latency_auto":
        run_latency_mode(args, argv, device)
        return
    stem = Path(args.out_dir) / f"speed_{device.type}"
    json_path = stem.with_suffix(".json")
    if args.plot_only:
        results = json.loads(json_path.read_text())
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        results = {
            "benchmark": "speed",
            "command": command_line(argv),
            "environment": environment_info(device),
            "config": vars(args),
            "rows": [],
        }
        for name in args.models:
            results["rows"] += measure_model(args, name)
            atomic_json_dump(results, json_path)
        print(_summary(results["rows"]))
    paths = plot_speedup(results, stem)
    print(f"\nwritten: {json_path}, {', '.join(map(str, paths))}")


if __name__ == "__main__":
    run_script(main)
