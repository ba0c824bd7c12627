"""Scale benchmark: whole-model vs block-by-block compression of Llama-style random-weight models.

For each (hidden size, number of blocks) a ``transformers`` ``LlamaForCausalLM`` with random
weights (Llama proportions: head size 64, MLP width ≈ 2.6875 × hidden rounded to 256, vocabulary
32000, untied head) is compressed in place (``inplace=True``) with ``BALFConfig(ratio)`` on
``calib_windows`` random-token windows of ``calib_len`` tokens, once per strategy, each in a fresh
subprocess so that its peak memory is its own. Recorded per run:

* ``weights_gb``: the model's parameter bytes;
* ``peak_above_gb``: peak resident memory minus the resident memory with the model and the
  calibration data loaded (``VmHWM`` reset there; GiB), and ``peak_above_over_weights``;
* ``forward_s`` / ``forward_cpu_s``: one plain forward pass over the calibration data (eval, no
  grad, no cache), wall and process CPU seconds; ``compress_s`` / ``compress_cpu_s``: the
  compression; ``compress_over_forward`` (CPU seconds, robust to other jobs on a shared machine)
  and ``compress_over_forward_wall``;
* the report's phase timings and ratios, and the commit of the code measured.

Targets (issue 30, at hidden 2048): block-by-block peak above the weights ≤ 0.5 × the weights;
compression ≤ 2 × one forward pass for whole-model calibration, ≤ 3 × block by block (CPU
seconds). The Markdown table states them beside the measurements of the hidden-2048 rows.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from balf.errors import BALFError
from balf.io.atomic import atomic_json_dump, atomic_write_text
from balf_paper.experiments.benchmarks.memory import GIB, peak_rss_bytes, reset_peak_rss
from balf_paper.experiments.environment import environment_info

__all__ = ["TARGETS", "TARGET_HIDDEN", "llama_config", "main", "measure_one", "render_markdown"]

TARGETS = {"block_peak_over_weights": 0.5, "whole_over_forward": 2.0, "block_over_forward": 3.0}
TARGET_HIDDEN = 2048


def llama_config(hidden: int, blocks: int, vocab: int = 32000) -> Any:
    """A Llama-proportioned ``LlamaConfig`` of ``hidden`` width and ``blocks`` decoder layers."""
    from transformers import LlamaConfig

    inter = int(round(hidden * 2.6875 / 256)) * 256
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=blocks,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )


def _rss_bytes() -> int:
    text = Path("/proc/self/status").read_text()
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _forward(model, batch):
    return model(**batch, use_cache=False)


def measure_one(
    hidden: int,
    blocks: int,
    strategy: str,
    calib_windows: int,
    calib_len: int,
    batch_size: int,
    ratio: float,
) -> dict[str, Any]:
    """One compression in this process (see the module docstring for the fields)."""
    import transformers

    import balf

    torch.manual_seed(0)
    config = llama_config(hidden, blocks)
    with torch.no_grad():
        model = transformers.LlamaForCausalLM(config).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (calib_windows, calib_len), generator=g)
    data = [{"input_ids": b} for b in ids.split(batch_size)]
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for batch in data:
            _forward(model, batch)
    forward_s, forward_cpu = time.perf_counter() - start, time.process_time() - cpu
    gc.collect()
    base = _rss_bytes()
    reset = reset_peak_rss()
    strat = balf.BlockByBlock() if strategy == "block" else None
    start, cpu = time.perf_counter(), time.process_time()
    _, report = balf.compress(
        model,
        data,
        balf.BALFConfig(ratio, metric="params"),
        forward=_forward,
        progress=False,
        inplace=True,
        strategy=strat,
    )
    compress_s, compress_cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = peak_rss_bytes()
    return {
        "hidden": hidden,
        "blocks": blocks,
        "intermediate": config.intermediate_size,
        "strategy": strategy,
        "calib_windows": calib_windows,
        "calib_len": calib_len,
        "batch_size": batch_size,
        "ratio": ratio,
        "params": report.model_params_before,
        "weights_gb": weights / GIB,
        "peak_above_gb": (peak - base) / GIB,
        "peak_above_over_weights": (peak - base) / weights,
        "rss_peak_reset": reset,
        "forward_s": forward_s,
        "forward_cpu_s": forward_cpu,
        "compress_s": compress_s,
        "compress_cpu_s": compress_cpu,
        "compress_over_forward": compress_cpu / forward_cpu,
        "compress_over_forward_wall": compress_s / forward_s,
        "layer_params_ratio": report.layer_params_ratio,
        "timings": report.timings,
        "threads": torch.get_num_threads(),
        "git_commit": environment_info("cpu")["git_commit"],
    }


def _target_cells(r: dict[str, Any]) -> tuple[str, str]:
    """``(ratio target, peak target)`` cells of a row: the target and whether it is met."""
    if r["hidden"] != TARGET_HIDDEN:
        return "", ""
    block = r["strategy"] == "block"
    ratio_t = TARGETS["block_over_forward" if block else "whole_over_forward"]
    ratio = f"≤ {ratio_t:g}: {'met' if r['compress_over_forward'] <= ratio_t else 'missed'}"
    if not block:
        return ratio, ""
    peak_t = TARGETS["block_peak_over_weights"]
    met = r["peak_above_over_weights"] <= peak_t
    return ratio, f"≤ {peak_t:g}: {'met' if met else 'missed'}"


def render_markdown(rows: list[dict[str, Any]]) -> str:
    """The results table (one row per run), with the targets beside the hidden-2048 rows."""
    head = (
        "| hidden | blocks | calibration | strategy | weights (GiB) | peak above weights (GiB) | "
        "peak / weights | peak target | forward CPU (s) | compression CPU (s) | "
        "compression / forward | ratio target | wall ratio |"
    )
    lines = [head, "|--:|--:|---|---|--:|--:|--:|---|--:|--:|--:|---|--:|"]
    for r in rows:
        ratio_target, peak_target = _target_cells(r)
        lines.append(
            f"| {r['hidden']} | {r['blocks']} | {r['calib_windows']}×{r['calib_len']} | "
            f"{'block by block' if r['strategy'] == 'block' else 'whole-model'} | "
            f"{r['weights_gb']:.2f} | {r['peak_above_gb']:.2f} | "
            f"{r['peak_above_over_weights']:.2f} | {peak_target} | {r['forward_cpu_s']:.1f} | "
            f"{r['compress_cpu_s']:.1f} | {r['compress_over_forward']:.2f} | {ratio_target} | "
            f"{r['compress_over_forward_wall']:.2f} |"
        )
    targets = (
        f"Targets (issue 30, hidden {TARGET_HIDDEN}): compression ≤ "
        f"{TARGETS['whole_over_forward']:g}× one forward pass whole-model, ≤ "
        f"{TARGETS['block_over_forward']:g}× block by block (process CPU seconds); block-by-block "
        f"peak above the weights ≤ {TARGETS['block_peak_over_weights']:g}× the weights."
    )
    return "\n".join(lines) + "\n\n" + targets + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes",
        nargs="+",
        default=["512x4", "1024x4", "2048x4"],
        help="HIDDENxBLOCKS[:WINDOWS] (WINDOWS overrides --calib-windows)",
    )
    p.add_argument("--strategies", nargs="+", default=["whole", "block"])
    p.add_argument("--calib-windows", type=int, default=32)
    p.add_argument("--calib-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--ratio", type=float, default=0.6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="results/benchmarks/block_scale")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--hidden", type=int, help=argparse.SUPPRESS)
    p.add_argument("--blocks", type=int, help=argparse.SUPPRESS)
    p.add_argument("--strategy", help=argparse.SUPPRESS)
    return p  # fmt: skip


def _size(spec: str, default_windows: int) -> tuple[int, int, int]:
    try:
        dims, _, windows = spec.partition(":")
        hidden, blocks = (int(v) for v in dims.lower().split("x"))
        return hidden, blocks, int(windows) if windows else default_windows
    except ValueError:
        raise BALFError(f"--sizes: expected HIDDENxBLOCKS[:WINDOWS], got {spec!r}") from None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every (size, strategy) in a subprocess; write ``<out>.json`` and ``<out>.md``.

    A run already stored in ``<out>.json`` (same size, strategy, calibration) is kept.
    """
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.one:
        row = measure_one(
            args.hidden, args.blocks, args.strategy, args.calib_windows, args.calib_len,
            args.batch_size, args.ratio,
        )  # fmt: skip
        print("RESULT " + json.dumps(row))
        return row
    out = Path(args.out)
    path = out.with_suffix(".json")
    stored = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    rows = stored["runs"]
    for spec in args.sizes:
        hidden, blocks, windows = _size(spec, args.calib_windows)
        for strategy in args.strategies:
            key = (hidden, blocks, strategy, windows, args.calib_len)
            if any(
                (r["hidden"], r["blocks"], r["strategy"], r["calib_windows"], r["calib_len"]) == key
                for r in rows
            ):
                continue
            cmd = [
                sys.executable, "-m", "balf_paper.experiments.benchmarks.block_scale", "--one",
                "--hidden", str(hidden), "--blocks", str(blocks), "--strategy", strategy,
                "--calib-windows", str(windows), "--calib-len", str(args.calib_len),
                "--batch-size", str(args.batch_size), "--ratio", str(args.ratio),
                "--threads", str(args.threads),
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                raise BALFError(f"benchmark run {key} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(lines[-1][len("RESULT ") :]))
            stored = {
                "command": "python -m balf_paper.experiments.benchmarks.block_scale "
                + " ".join(sys.argv[1:] if argv is None else argv),
                "environment": environment_info("cpu"),
                "targets": TARGETS,
                "runs": rows,
            }
            atomic_json_dump(stored, path)
            atomic_write_text(render_markdown(rows), out.with_suffix(".md"))
    return stored


if __name__ == "__main__":
    main()
