"""Every sweep script, end to end through its ``main([...])`` on tiny fixture data.

Models have random weights (``--random-weights``); data sets are a few images written in the
real layouts by :mod:`_fixtures`. Checked: the ``results.json`` schema and run-directory files,
resuming after ``--stop-after``, refusing to resume a different sweep, and the
``DatasetNotFoundError`` of missing data.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from _experiments import experiment
from _fixtures import (
    accept_cifar10_checksums,
    use_only_fixture_fashion_mnist,
    write_cifar10,
    write_cifar10c,
    write_fashion_mnist,
    write_fashion_mnist_c,
    write_imagenet,
)

from balf import Compressor
from balf.errors import BALFError, DatasetNotFoundError

SMALL_DATASETS = {"cifar10": "cifar10", "fashion-mnist": "fashion_mnist"}  # name -> scripts/ folder
BALF_MODES = ("flops_auto", "params_auto")
POINT_KEYS = {"knob", "metrics", "flops_ratio", "params_ratio", "ranks"}
CORRUPTIONS = ("fog", "snow")


def _common(data_root: Path, tmp_path: Path, calib_size: int = 8) -> list[str]:
    return [
        "--random-weights",
        "--data-root",
        str(data_root),
        "--calib-size",
        str(calib_size),
        "--eval-size",
        "6",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--no-progress",
        "--out-root",
        str(tmp_path / "results"),
        "--cache-root",
        str(tmp_path),
    ]


@pytest.fixture
def small_data(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """``(dataset, data root)`` of a tiny CIFAR-10 or Fashion-MNIST, with its corrupted set."""
    dataset = request.param
    root = tmp_path / "data"
    if dataset == "cifar10":
        write_cifar10(root)
        accept_cifar10_checksums(monkeypatch, root)
        write_cifar10c(root / "corrupted", CORRUPTIONS)
    else:
        write_fashion_mnist(root)
        write_fashion_mnist_c(root / "corrupted", CORRUPTIONS)
        # never fall back to a system-wide copy: the fixture files must be the ones read
        use_only_fixture_fashion_mnist(monkeypatch, tmp_path)
    return dataset, root


def check_run_dir(run_dir: Path, mode: str, knobs: list[float], **config) -> dict:
    """Assert the files and the ``results.json`` schema of one sweep; return the results."""
    for name in ("results.json", "config.json", "environment.json", "command.txt"):
        assert (run_dir / name).is_file(), name
    results = json.loads((run_dir / "results.json").read_text())
    assert {"config", "environment", "points"} <= set(results)
    assert results["config"] == json.loads((run_dir / "config.json").read_text())
    assert results["environment"] == json.loads((run_dir / "environment.json").read_text())
    assert {"torch", "device", "git_commit"} <= set(results["environment"])
    assert results["config"]["mode"] == mode
    assert results["config"]["knobs"] == knobs
    for key, value in config.items():
        assert results["config"][key] == value, key
    if "dataset" in config:  # the recorded command reruns this sweep, dataset included
        assert f"--dataset {config['dataset']}" in (run_dir / "command.txt").read_text()

    points = results["points"]
    assert [p["knob"] for p in points] == ["original", *knobs]  # original first, each knob once
    original = points[0]
    assert original["flops_ratio"] == original["params_ratio"] == 1.0
    for point in points:
        assert POINT_KEYS <= set(point), point.keys()
        assert 0.0 <= point["metrics"]["accuracy"] <= 1.0
        assert math.isfinite(point["metrics"]["loss"])
        assert 0.0 < point["flops_ratio"] <= 1.0
        assert 0.0 < point["params_ratio"] <= 1.0
    for point in points[1:]:
        assert point["ranks"] and all(
            isinstance(r, int) and r >= 1 for r in point["ranks"].values()
        )
        if mode in BALF_MODES:  # within budget: allocator total and measured layer ratio
            metric = mode.removesuffix("_auto")
            assert point["achieved"] <= point["budget"]
            assert point[f"layer_{metric}_ratio"] <= point["knob"] + 1e-9
    return results


def assert_no_temporary_files(root: Path) -> None:
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers


# --- every script end to end ------------------------------------------------------------------


@pytest.mark.parametrize("small_data", list(SMALL_DATASETS), indirect=True)
def test_factorize_sweep(small_data, tmp_path):
    dataset, root = small_data
    # The code path is the same for both datasets: all six modes at one knob on CIFAR-10, the two
    # BALF modes at two knobs on Fashion-MNIST.
    if dataset == "cifar10":
        modes = ["flops_auto", "params_auto", "energy", "energy_act_aware", "uniform"]
        modes, knobs = [*modes, "uniform_act_aware"], [0.6]
    else:
        modes, knobs = list(BALF_MODES), [0.6, 0.95]
    script = experiment("factorize", dataset)
    script.main([*_common(root, tmp_path), "--modes", *modes, "--knobs", *map(str, knobs)])
    out = tmp_path / "results" / dataset / "resnet20"
    for mode in modes:
        check_run_dir(out / mode, mode, knobs, dataset=dataset, calib_size=8, eval_size=6)
    assert_no_temporary_files(tmp_path)


@pytest.mark.parametrize("small_data", list(SMALL_DATASETS), indirect=True)
def test_calib_size_sweep(small_data, tmp_path):
    dataset, root = small_data
    script = experiment("calib-size", dataset)
    script.main([*_common(root, tmp_path), "--calib-sizes", "4", "8", "--ratios", "0.5", "0.8"])
    for size in (4, 8):
        run_dir = tmp_path / "results" / dataset / "resnet20" / "calib-size" / f"calib{size}"
        check_run_dir(run_dir, "params_auto", [0.5, 0.8], calib_size=size)
    assert_no_temporary_files(tmp_path)


@pytest.mark.parametrize("small_data", list(SMALL_DATASETS), indirect=True)
def test_n_iters_sweep(small_data, tmp_path):
    dataset, root = small_data
    script = experiment("n-iters", dataset)
    script.main([*_common(root, tmp_path), "--n-iters-values", "1", "4", "--ratios", "0.6"])
    for n in (1, 4):
        run_dir = tmp_path / "results" / dataset / "resnet20" / "n-iters" / f"iters{n}"
        results = check_run_dir(run_dir, "flops_auto", [0.6], n_iters=n)
        assert results["points"][1]["budget"] is not None
    assert_no_temporary_files(tmp_path)


@pytest.mark.parametrize("small_data", list(SMALL_DATASETS), indirect=True)
def test_corrupted_sweep(small_data, tmp_path):
    dataset, root = small_data
    script = experiment("corrupted", dataset)
    script.main(
        [
            *_common(root, tmp_path),
            "--corrupted-root",
            str(root / "corrupted"),
            "--modes",
            "params_auto",
            "--ratios",
            "0.7",
            "--corruptions",
            *CORRUPTIONS,
            "--severities",
            "1",
            "5",
        ]
    )
    run_dir = tmp_path / "results" / dataset / "resnet20" / "corruption" / "params_auto"
    results = check_run_dir(run_dir, "params_auto", [0.7])
    assert results["config"]["evaluation"]["corruptions"] == list(CORRUPTIONS)
    for point in results["points"]:
        metrics = point["metrics"]
        assert set(metrics["corrupted"]) == set(CORRUPTIONS)
        for per_severity in metrics["corrupted"].values():
            assert set(per_severity) == {"1", "5"}
            assert all(0.0 <= a <= 1.0 for a in per_severity.values())
        assert 0.0 <= metrics["corrupted_accuracy"] <= 1.0
    assert_no_temporary_files(tmp_path)


def test_imagenet_sweeps_resnet18(tmp_path):
    """Both ImageNet scripts on 224-pixel crops of small JPEGs; they share one cache."""
    root = write_imagenet(tmp_path / "data")
    common = [*_common(root, tmp_path, calib_size=4), "--model", "resnet18", "--eval-size", "2"]
    torch.manual_seed(0)  # same random weights in both runs, so the second hits the cache
    factorize = experiment("factorize", "imagenet")
    factorize.main([*common, "--modes", "flops_auto", "--knobs", "0.5"])
    torch.manual_seed(0)
    calib = experiment("calib-size", "imagenet")
    calib.main([*common, "--calib-sizes", "4", "--ratios", "0.5"])

    out = tmp_path / "results" / "imagenet" / "resnet18"
    config = {"dataset": "imagenet", "model": "resnet18", "calib_size": 4, "eval_size": 2}
    check_run_dir(out / "flops_auto", "flops_auto", [0.5], **config)
    results = check_run_dir(out / "calib-size" / "calib4", "params_auto", [0.5], **config)
    assert results["points"][0]["eval_samples"] == 2
    assert list((tmp_path / "activation-cache").glob("*.pt"))
    assert_no_temporary_files(tmp_path)


# --- resuming ---------------------------------------------------------------------------------


@pytest.mark.parametrize("small_data", ["cifar10"], indirect=True)
def test_rerun_resumes_without_recomputing(small_data, tmp_path, monkeypatch):
    _, root = small_data
    compressed: list[float] = []
    compress = Compressor.compress

    def counting_compress(self, config, *args, **kwargs):
        compressed.append(config.knob)
        return compress(self, config, *args, **kwargs)

    monkeypatch.setattr(Compressor, "compress", counting_compress)
    script = experiment("factorize", "cifar10")
    argv = [*_common(root, tmp_path), "--modes", "flops_auto", "--knobs", "0.5", "0.8"]
    run_dir = tmp_path / "results" / "cifar10" / "resnet20" / "flops_auto"

    torch.manual_seed(0)
    script.main([*argv, "--stop-after", "1"])
    assert compressed == [0.5]
    first = json.loads((run_dir / "results.json").read_text())["points"]
    assert [p["knob"] for p in first] == ["original", 0.5]

    torch.manual_seed(0)  # the same random model as the first run
    script.main(argv)
    assert compressed == [0.5, 0.8]  # only the missing knob was compressed
    results = check_run_dir(run_dir, "flops_auto", [0.5, 0.8])
    assert results["points"][:2] == first  # earlier points kept verbatim (timings included)
    assert_no_temporary_files(tmp_path)


@pytest.mark.parametrize(
    "change",
    [["--calib-size", "12"], ["--seed", "1"], ["--eval-size", "4"], ["--n-iters", "7"]],
    ids=["calib-size", "seed", "eval-size", "n-iters"],
)
@pytest.mark.parametrize("small_data", ["cifar10"], indirect=True)
def test_rerun_with_another_identity_is_refused(small_data, tmp_path, change):
    _, root = small_data
    script = experiment("factorize", "cifar10")
    argv = [*_common(root, tmp_path), "--modes", "flops_auto", "--knobs", "0.5"]
    script.main([*argv, "--stop-after", "0"])  # only the original point
    results_path = tmp_path / "results" / "cifar10" / "resnet20" / "flops_auto" / "results.json"
    before = results_path.read_text()
    with pytest.raises(BALFError, match="holds a different sweep") as info:
        script.main([*argv, *change, "--stop-after", "0"])
    assert str(results_path) in str(info.value)
    assert results_path.read_text() == before


@pytest.mark.parametrize("small_data", ["cifar10"], indirect=True)
def test_a_knob_stored_twice_in_a_damaged_results_file_is_refused_with_its_position(
    small_data, tmp_path
):
    """Resuming used to keep both copies (and compute neither again)."""
    _, root = small_data
    script = experiment("factorize", "cifar10")
    argv = [*_common(root, tmp_path), "--modes", "flops_auto", "--knobs", "0.5", "0.8"]
    script.main([*argv, "--stop-after", "1"])
    results_path = tmp_path / "results" / "cifar10" / "resnet20" / "flops_auto" / "results.json"
    results = json.loads(results_path.read_text())
    results["points"].append(dict(results["points"][1]))  # knob 0.5 again
    results_path.write_text(json.dumps(results))
    with pytest.raises(BALFError, match=r"points\[2\] repeats knob 0\.5 of points\[1\]"):
        script.main(argv)


@pytest.mark.parametrize("small_data", ["cifar10"], indirect=True)
def test_other_weights_into_the_same_folder_are_refused(small_data, tmp_path):
    from balf_paper.models import create_model, save_checkpoint

    _, root = small_data
    script = experiment("factorize", "cifar10")
    argv = [*_common(root, tmp_path), "--modes", "flops_auto", "--knobs", "0.5"]
    script.main([*argv, "--stop-after", "0"])
    checkpoint = save_checkpoint(create_model("resnet20", pretrained=False), tmp_path / "m.pt")
    trained = [a for a in argv if a != "--random-weights"] + ["--checkpoint", str(checkpoint)]
    with pytest.raises(BALFError, match="holds a different sweep"):
        script.main([*trained, "--stop-after", "0"])
    script.main([*argv, "--stop-after", "0"])  # the same seeded random weights resume fine


# --- missing data -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "missing", ["cifar10", "cifar10-c", "fashion-mnist-c", "imagenet-calib", "imagenet-val"]
)
def test_missing_data_names_the_path(tmp_path, monkeypatch, missing):
    root = tmp_path / "data"
    extra: list[str] = []
    if missing == "cifar10":
        script, expected = experiment("factorize", "cifar10"), root / "cifar-10-batches-py"
        root.mkdir()
    elif missing.endswith("-c"):
        dataset = "cifar10" if missing == "cifar10-c" else "fashion-mnist"
        script, expected = experiment("corrupted", dataset), tmp_path / "nowhere" / "fog.npy"
        if missing == "cifar10-c":
            write_cifar10(root)
            accept_cifar10_checksums(monkeypatch, root)
        else:
            write_fashion_mnist(root)
        extra = ["--corrupted-root", str(tmp_path / "nowhere"), "--corruptions", "fog"]
    else:
        script, expected = experiment("factorize", "imagenet"), root / missing
        shutil.rmtree(write_imagenet(root) / missing)
        extra = ["--model", "resnet18"]
    with pytest.raises(DatasetNotFoundError) as info:
        script.main([*_common(root, tmp_path), "--modes", "flops_auto", *extra])
    assert str(expected) in str(info.value)
