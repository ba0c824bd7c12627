"""Benchmark and single-layer scripts end to end on tiny synthetic settings, and every .sh parses.

The scripts' ``main(argv)`` run in this process (measure_compression_time still measures each
model in the subprocess it starts), with ``--threads 1``: on a shared 2-core machine
multi-threaded LAPACK calls can be orders of magnitude slower than single-threaded ones.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"


@pytest.fixture
def one_thread(monkeypatch):
    """Scripts run in this process with ``--threads 1``; restore torch's thread count after."""
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def _load(path: Path) -> ModuleType:
    """Import a script as a module (its ``main`` is not run)."""
    name = f"_script_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def _no_tmp_left(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_measure_compression_time_synthetic(tmp_path, caplog, capsys, monkeypatch, one_thread):
    # main() runs here; the model is measured in the subprocess it starts (--single)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench" / "compression_time.json"
    args = ["--synthetic", "--models", "resnet18", "--calib-size", "4", "--image-size", "32"]
    args += ["--batch-size", "2", "--out", str(out), "--no-progress", "--threads", "1"]
    script = _load(SCRIPTS / "imagenet" / "measure_compression_time.py")
    assert script.main(args) == 0
    stdout = capsys.readouterr().out
    assert "| model |" in stdout and "| resnet18 |" in stdout

    data = json.loads(out.read_text())
    assert data["benchmark"] == "compression_time"
    assert "torch" in data["environment"] and "measure_compression_time" in data["command"]
    (row,) = data["rows"]
    assert (row["model"], row["calib_size"], row["batch_size"]) == ("resnet18", 4, 2)
    assert row["device"] == "cpu" and row["synthetic"] is True and row["image_size"] == 32
    assert {"statistics", "decomposition", "allocation", "replacement"} <= set(row["phases"])
    assert all(t >= 0 for t in row["phases"].values())
    assert sum(row["phases"].values()) <= row["total"] + 1e-6
    assert row["forward"] > 0 and row["total"] > 0
    assert math.isclose(row["total_over_forward"], row["total"] / row["forward"])
    assert row["peak_rss_increase_gb"] >= 0 and row["rss_peak_gb"] >= row["rss_baseline_gb"]
    assert 0 < row["model_flops_ratio"] < 1 and row["factorized_layers"] > 0
    assert "torch" in row["environment"] and "measure_compression_time" in row["command"]
    _no_tmp_left(tmp_path)

    # --resume keeps the row measured with the same settings instead of measuring again
    # (in this process: nothing is measured, so no subprocess is started)
    with caplog.at_level(logging.INFO, logger="measure_compression_time"):
        assert script.main([*args, "--resume"]) == 0
    assert "already measured" in caplog.text
    assert json.loads(out.read_text())["rows"] == data["rows"]


def test_measure_speed_synthetic(tmp_path, one_thread):
    models = ["resnet18", "timm:vit_tiny_patch16_224"]
    ratios, batch_sizes = [0.7, 0.4], [1, 2]
    args = ["--synthetic", "--models", *models, "--image-size", "32", "--calib-size", "4"]
    args += ["--ratios", *map(str, ratios), "--batch-sizes", *map(str, batch_sizes)]
    args += ["--repeats", "2", "--warmup", "1", "--channels-last", "--device", "cpu"]
    args += ["--threads", "1"]
    args += ["--out-dir", str(tmp_path / "bench"), "--no-progress"]
    _load(SCRIPTS / "imagenet" / "measure_speed.py").main(args)

    stem = tmp_path / "bench" / "speed_cpu"
    data = json.loads(stem.with_suffix(".json").read_text())
    rows = data["rows"]
    assert len(rows) == len(models) * (1 + len(ratios)) * len(batch_sizes)
    original = {(r["model"], r["batch_size"]): r for r in rows if r["variant"] == "original"}
    for r in rows:
        assert r["latency_s"] > 0 and len(r["latencies_s"]) == 2
        assert math.isclose(r["throughput"], r["batch_size"] / r["latency_s"])
        assert math.isclose(r["flops_reduction"], 1 / r["flops_ratio"])
        base = original[(r["model"], r["batch_size"])]
        assert math.isclose(r["speedup"], base["latency_s"] / r["latency_s"])
        if r["variant"] == "original":
            assert r["keep_ratio"] is None and r["flops_ratio"] == 1 and r["speedup"] == 1
        else:
            assert r["keep_ratio"] in ratios and 0 < r["flops_ratio"] < 1
        assert r["channels_last"] == (r["model"] == "resnet18")
    for suffix in (".pdf", ".png"):
        assert stem.with_suffix(suffix).stat().st_size > 0
    _no_tmp_left(tmp_path)


def test_compare_svd_vs_actaware_synthetic(tmp_path, one_thread):
    ratios = [0.1, 0.25, 0.5, 0.75, 1.0]
    args = ["--source", "synthetic", "--ratios", *map(str, ratios), "--dtype", "float64"]
    args += ["--threads", "1"]
    args += ["--calib-size", "6", "--heldout-size", "6", "--batch-size", "4", "--tokens", "4"]
    args += ["--linear-in", "24", "--linear-out", "16", "--conv-channels", "6"]
    args += ["--grouped-channels", "8", "--groups", "2", "--spatial", "6"]
    args += ["--out-dir", str(tmp_path / "svd")]
    _load(SCRIPTS / "compare_svd_vs_actaware.py").main(args)

    stem = tmp_path / "svd" / "svd_vs_actaware_synthetic"
    data = json.loads(stem.with_suffix(".json").read_text())
    assert [layer["panel"] for layer in data["layers"]] == ["linear", "conv", "grouped_conv"]
    assert data["layers"][2]["geometry"]["groups"] == 2
    for layer in data["layers"]:
        points = layer["points"]
        assert [p["ratio"] for p in points] == ratios
        for p in points:
            svd, aa = p["svd"]["calibration"], p["act_aware"]["calibration"]
            # Eckart–Young: activation-aware is optimal on the calibration data ...
            assert aa <= svd + 1e-9, (layer["panel"], p)
            # ... and its error is exactly the discarded output energy
            assert aa == pytest.approx(p["bound"], abs=1e-9)
        full = points[-1]
        for kind in ("svd", "act_aware"):
            for split in ("calibration", "heldout"):
                assert full[kind][split] < 1e-12
        assert points[0]["svd"]["calibration"] > points[0]["act_aware"]["calibration"]
    for suffix in (".pdf", ".png"):
        assert stem.with_suffix(suffix).stat().st_size > 0
    _no_tmp_left(tmp_path)


@pytest.mark.parametrize(
    "script",
    sorted(SCRIPTS.rglob("*.sh")),
    ids=lambda p: str(p.relative_to(SCRIPTS)),
)
def test_shell_scripts_parse(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_measure_startup_writes_every_command(tmp_path):
    out = tmp_path / "startup.json"
    done = subprocess.run(
        [sys.executable, "scripts/benchmarks/measure_startup.py", "--repeats", "1", "--out", out],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert "measure_startup.py" in result["command"]
    assert {"import balf", "factorize --dataset cifar10 --help"} <= set(result["rows"])
    for row in result["rows"].values():
        assert 0 < row["cpu_s"] and 0 < row["wall_s"]
    assert result["rows"]["import balf"]["prints_to_stderr"] is False
