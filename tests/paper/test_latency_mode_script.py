"""The latency mode of ``scripts/imagenet/measure_speed.py`` end to end on tiny settings.

No assertion depends on timing: the schema of the rows, the files written, and the tables'
arithmetic on hand-made rows (within-5% flags, FLOPs-budget accuracy interpolated at the same
measured latency).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from _fixtures import REPO, load_script, use_only_fixture_fashion_mnist, write_fashion_mnist

from balf_paper.experiments.latency.report import accuracy_table, ratio_table, summary_table

ROW_KEYS = {"model", "batch_size", "mode", "requested", "measured_ratio", "predicted_ratio"}
ROW_KEYS |= {"latency_s", "original_latency_s", "flops_ratio", "ranks", "accuracy"}


@pytest.fixture
def one_thread(monkeypatch):
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _tiny(tmp_path, *extra: str) -> list[str]:
    return [
        "--mode", "latency_auto", "--ratios", "0.97", "--batch-sizes", "1", "2",
        "--repeats", "1", "--warmup", "0", "--latency-points", "2", "--min-run-time", "0.001",
        "--threads", "1", "--calib-size", "8", "--out-dir", str(tmp_path / "bench"),
        "--latency-cache", str(tmp_path / "cache"), "--no-progress", "--device", "cpu", *extra,
    ]  # fmt: skip


def _check(tmp_path, models, with_accuracy: bool) -> list[dict]:
    stem = tmp_path / "bench" / "latency_cpu"
    data = json.loads(stem.with_suffix(".json").read_text())
    assert data["benchmark"] == "latency_budget" and "--mode latency_auto" in data["command"]
    rows = data["rows"]
    assert {r["model"] for r in rows} == set(models)
    for r in rows:
        assert r["batch_size"] in (1, 2)
        if r.get("skipped"):  # a budget the measured latencies cannot reach
            assert r["mode"] == "latency_auto" and "ratio" in r["skipped"]
            continue
        assert ROW_KEYS <= set(r)
        assert r["latency_s"] > 0
        assert math.isclose(r["measured_ratio"], r["latency_s"] / r["original_latency_s"])
        assert (r["accuracy"] is not None) == with_accuracy
        if r["mode"] == "original":
            assert r["measured_ratio"] == 1.0 and r["requested"] == 1.0
    modes = {(r["model"], r["batch_size"], r["mode"]) for r in rows}
    assert {
        (m, b, mode) for m in models for b in (1, 2) for mode in ("original", "flops_auto")
    } <= (modes)
    for suffix in (".md", ".png", ".pdf"):
        assert stem.with_suffix(suffix).stat().st_size > 0
    assert (tmp_path / "bench" / "latency_summary_cpu.md").stat().st_size > 0
    assert (tmp_path / "bench" / "latency_accuracy_cpu.md").exists() == with_accuracy
    assert list((tmp_path / "cache" / "latency").glob("*.json"))
    return rows


def test_latency_mode_synthetic(tmp_path, one_thread):
    script = load_script("imagenet/measure_speed.py")
    script.main([*_tiny(tmp_path), "--synthetic", "--models", "resnet18", "--image-size", "32"])
    _check(tmp_path, ["resnet18"], with_accuracy=False)
    # --plot-only re-renders tables and plot from the JSON
    (tmp_path / "bench" / "latency_cpu.md").unlink()
    script.main([*_tiny(tmp_path), "--synthetic", "--models", "resnet18", "--plot-only"])
    assert (tmp_path / "bench" / "latency_cpu.md").is_file()


def test_latency_mode_trained_fashion_mnist(tmp_path, one_thread, monkeypatch):
    root = write_fashion_mnist(tmp_path / "data")
    use_only_fixture_fashion_mnist(monkeypatch, tmp_path)
    monkeypatch.chdir(REPO)  # the trained checkpoint's default path is relative to the repo
    script = load_script("imagenet/measure_speed.py")
    argv = [*_tiny(tmp_path), "--models", "fashion-mnist:resnet20", "--data-root", str(root)]
    script.main([*argv, "--eval-size", "6"])
    _check(tmp_path, ["fashion-mnist:resnet20"], with_accuracy=True)


def _row(mode, batch, requested, measured, accuracy, flops=0.5):
    return {
        "model": "m", "batch_size": batch, "mode": mode, "requested": requested,
        "predicted_ratio": requested, "measured_ratio": measured, "flops_ratio": flops,
        "accuracy": accuracy,
    }  # fmt: skip


def test_tables_flag_the_target_and_interpolate_accuracy():
    rows = [
        _row("original", 8, 1.0, 1.0, 0.90),
        _row("flops_auto", 8, 0.8, 0.9, 0.88),
        _row("flops_auto", 8, 0.6, 0.7, 0.80),
        _row("latency_auto", 8, 0.8, 0.82, 0.89),  # within 5% of 0.8
        _row("latency_auto", 8, 0.6, 0.66, 0.70),  # 10% over: missed
        {"model": "m", "batch_size": 8, "mode": "latency_auto", "requested": 0.3,
         "skipped": "a latency keep-ratio of 0.3 ...", "accuracy": None},
    ]  # fmt: skip
    ratios = ratio_table(rows)
    assert "| m | 8 | 0.80 | 0.800 | 0.820 | yes | 0.900 | 0.500 |" in ratios
    assert "| m | 8 | 0.60 | 0.600 | 0.660 | no | 0.700 | 0.500 |" in ratios
    assert "| m | 8 | 0.30 | unreachable" in ratios
    accuracy = accuracy_table(rows)
    # FLOPs curve at measured 0.82: 0.80 + (0.82 − 0.7) / 0.2 · 0.08 = 0.848
    assert "| m | 8 | 0.80 | 0.820 | 89.00 | 84.80 | +4.20 |" in accuracy
    assert "| m | 8 | 0.60 | 0.660 | 70.00 | n/a (outside range) |  |" in accuracy
    summary = summary_table(rows)
    assert (
        "| m | 8 | 0.8 / 0.6 / 0.3 | 0.82 / 0.66 / — | 1/3 | 0.90 / 0.70 / — | +4.20 / — / — |"
        in (summary)
    )
