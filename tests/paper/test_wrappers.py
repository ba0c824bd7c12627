"""The ``.sh`` wrappers call the right scripts with the right arguments.

Each wrapper runs with ``PYTHON`` pointing at a recorder that writes the argument list of every
call to a log instead of running Python. Checked for every wrapper that calls Python directly:
the scripts it runs (existing files under ``scripts/``), the models and modes it loops over
(registered ones, in the documented order), the environment switches (``MODELS``, ``FOLDING``)
and that the caller's extra arguments reach every call unchanged. The ``.py`` scripts themselves
run end to end in ``test_sweep_scripts.py``, ``test_benchmark_scripts.py`` and friends.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import balf_paper.experiments  # noqa: F401  (registers the Model Folding modes)
from balf.ranks.modes import registered_modes
from balf_paper.experiments.cli.main import EXPERIMENTS
from balf_paper.models import list_models
from balf_paper.models.imagenet import IMAGENET_MODELS

REPO = Path(__file__).resolve().parents[2]
EXTRA = ["--seed", "7", "--note=a b"]  # one value with a space: quoting must survive
ENTRY = ["-m", "balf_paper.experiments"]  # the one entry point of the sweeps

SIX = ["flops_auto", "params_auto", "energy", "energy_act_aware", "uniform", "uniform_act_aware"]
FOLD = ["--modes", "folding_ar", "folding_r"]
JPEG_RECIPE = "--schedule cosine --lr 0.1 --momentum 0.9 --nesterov --weight-decay 5e-4 "
JPEG_RECIPE += "--batch-size 128 --seed 0"
FMNIST_RECIPE = "--schedule cosine --lr 0.1 --momentum 0.9 --nesterov --weight-decay 5e-4 "
FMNIST_RECIPE += "--batch-size 128 --threads 2 --seed 0"
IMAGENET = list(IMAGENET_MODELS)[:7]  # the paper's seven models, in the wrapper's order
SAMPLES_SWEEP = [*ENTRY, "factorize", "--dataset", "imagenet-samples", "--model"]
TABLE_RATIOS = ["0.7", "0.75", "0.8", "0.9", "0.97"]  # MobileNetV2's table in the paper
RATIO_MODES = ["flops_auto", "params_auto", "uniform", "uniform_act_aware"]

# wrapper -> (environment, wrapper arguments before EXTRA, expected calls without EXTRA)
CASES: dict[str, tuple[dict[str, str], list[str], list[list[str]]]] = {
    "language/smollm2_wikitext.sh": (
        {},
        [],
        [[*ENTRY, "language", "--task", "wikitext"]],
    ),
    "language/minilm_stsb.sh": ({}, [], [[*ENTRY, "language", "--task", "stsb"]]),
    "language/measure_scale.sh": (
        {},
        [],
        [
            [
                "scripts/language/measure_scale.py",
                *("--sizes", "512x4:32", "1024x4:16", "2048x4:8", "--calib-len", "512"),
                *("--batch-size", "2", "--ratio", "0.6", "--threads", "1"),
            ]
        ],
    ),
    "cifar10/factorize_sweep.sh": (
        {},
        [],
        [
            [*ENTRY, "factorize", "--dataset", "cifar10", "--model", "resnet20"],
            [*ENTRY, "factorize", "--dataset", "cifar10", "--model", "resnet20", *FOLD],
            [*ENTRY, "factorize", "--dataset", "cifar10", "--model", "resnet56"],
            [*ENTRY, "factorize", "--dataset", "cifar10", "--model", "resnet56", *FOLD],
        ],
    ),
    "cifar10/factorize_sweep.sh MODELS": (
        {"MODELS": "resnet20a resnet56a", "FOLDING": "0"},
        ["--dataset", "cifar10-jpeg"],
        [
            # the caller's --dataset comes last and wins (the entry point keeps the last one)
            [*ENTRY, "factorize", "--dataset", "cifar10", "--model", "resnet20a"]
            + ["--dataset", "cifar10-jpeg"],
            # the caller's --dataset comes last and wins (the entry point keeps the last one)
            [*ENTRY, "factorize", "--dataset", "cifar10", "--model", "resnet56a"]
            + ["--dataset", "cifar10-jpeg"],
        ],
    ),
    "cifar10/calib_size_sweep.sh": (
        {},
        [],
        [
            [*ENTRY, "calib-size", "--dataset", "cifar10", "--model", "resnet20"],
            [*ENTRY, "calib-size", "--dataset", "cifar10", "--model", "resnet56"],
        ],
    ),
    "cifar10/n_iters_sweep.sh": (
        {},
        [],
        [[*ENTRY, "n-iters", "--dataset", "cifar10", "--model", "resnet20"]],
    ),
    "cifar10/corrupted_sweep.sh": (
        {},
        [],
        [[*ENTRY, "corrupted", "--dataset", "cifar10", "--model", "resnet20"]],
    ),
    "cifar10/make_corrupted.sh": ({}, [], [["scripts/cifar10/make_corrupted.py"]]),
    "cifar10/calib_shift_sweep.sh": (
        {},
        [],
        [[*ENTRY, "calib-shift", "--dataset", "cifar10", "--model", "resnet20"]],
    ),
    "imagenet/calib_shift_sweep.sh": ({}, [], [[*ENTRY, "calib-shift", "--dataset", "imagenet"]]),
    "cifar10/pretrain_resnet.sh": (
        {},
        [],
        [
            ["scripts/cifar10/pretrain_resnet.py", "--arch", "resnet20", "--dataset", "cifar10"],
            ["scripts/cifar10/pretrain_resnet.py", "--arch", "resnet56", "--dataset", "cifar10"],
        ],
    ),
    "cifar10/pretrain_resnet.sh JPEG": (
        {},
        ["--dataset", "cifar10-jpeg"],
        [
            ["scripts/cifar10/pretrain_resnet.py", "--arch", arch, "--dataset", "cifar10-jpeg"]
            + ["--epochs", epochs, *JPEG_RECIPE.split()]
            for arch, epochs in (("resnet20", "30"), ("resnet56", "20"))
        ],
    ),
    "fashion_mnist/factorize_sweep.sh": (
        {"MODELS": "resnet20"},
        [],
        [
            [*ENTRY, "factorize", "--dataset", "fashion-mnist", "--model", "resnet20"],
            [*ENTRY, "factorize", "--dataset", "fashion-mnist", "--model", "resnet20", *FOLD],
        ],
    ),
    "fashion_mnist/calib_size_sweep.sh": (
        {},
        [],
        [
            [*ENTRY, "calib-size", "--dataset", "fashion-mnist", "--model", "resnet20"],
            [*ENTRY, "calib-size", "--dataset", "fashion-mnist", "--model", "resnet56"],
        ],
    ),
    "fashion_mnist/n_iters_sweep.sh": (
        {},
        [],
        [[*ENTRY, "n-iters", "--dataset", "fashion-mnist", "--model", "resnet20"]],
    ),
    "fashion_mnist/corrupted_sweep.sh": (
        {},
        [],
        [[*ENTRY, "corrupted", "--dataset", "fashion-mnist", "--model", "resnet20"]],
    ),
    "fashion_mnist/make_corrupted.sh": ({}, [], [["scripts/fashion_mnist/make_corrupted.py"]]),
    "fashion_mnist/pretrain.sh": (
        {},
        [],
        [
            ["scripts/cifar10/pretrain_resnet.py", "--arch", arch, "--dataset", "fashion-mnist"]
            + ["--epochs", epochs, *FMNIST_RECIPE.split()]
            + ["--out-dir", f"results/fashion-mnist/checkpoints/{arch}"]
            for arch, epochs in (("resnet20", "30"), ("resnet56", "20"))
        ],
    ),
    "imagenet/factorize_sweep.sh": (
        {},
        [],
        [[*ENTRY, "factorize", "--dataset", "imagenet", "--model", m] for m in IMAGENET],
    ),
    "imagenet/calib_size_sweep.sh": (
        {},
        [],
        [
            [*ENTRY, "calib-size", "--dataset", "imagenet", "--model", "resnet18"],
            [*ENTRY, "calib-size", "--dataset", "imagenet", "--model", "resnet50"],
        ],
    ),
    "imagenet/run_resnext.sh": (
        {},
        [],
        [
            [*ENTRY, "factorize", "--dataset", "imagenet", "--model", "resnext50_32x4d"]
            + ["--modes", *SIX],
            [*ENTRY, "factorize", "--dataset", "imagenet", "--model", "resnext101_32x8d"]
            + ["--modes", *SIX],
            # the render step takes no extra arguments (see the EXPECT_NO_EXTRA set)
            ["scripts/render_results.py", "--datasets", "imagenet", "--models"]
            + ["resnext50_32x4d", "resnext101_32x8d"],
        ],
    ),
    "imagenet/extract_val.sh": (
        {},
        [],
        [["scripts/imagenet/extract_val.py", "--config", "configs/imagenet_data.yaml"]],
    ),
    "imagenet/extract_calib.sh": (
        {},
        [],
        [["scripts/imagenet/extract_calib.py", "--config", "configs/imagenet_data.yaml"]],
    ),
    "imagenet/measure_speed.sh": ({}, [], [["scripts/imagenet/measure_speed.py"]]),
    "benchmarks/measure_startup.sh": ({}, [], [["scripts/benchmarks/measure_startup.py"]]),
    "imagenet/measure_compression_time.sh": (
        {},
        [],
        [["scripts/imagenet/measure_compression_time.py", "--resume"]],
    ),
    "imagenet/get_samples.sh": (
        {},
        [],
        [["scripts/imagenet/get_samples.py"]],
    ),
    "imagenet/run_samples.sh": (
        {},
        [],
        [
            ["scripts/imagenet/get_samples.py", "../shared/data/imagenet-samples"]
            + ["datasets/imagenet-samples"]
        ]
        + [
            call
            for m in ("mobilenet_v2_q8", "efficientnet_lite0")
            for call in (
                [*SAMPLES_SWEEP, m, "--knobs", *TABLE_RATIOS, "--modes", *RATIO_MODES],
                [*SAMPLES_SWEEP, m, "--modes", "energy_act_aware", "energy"],
                [*SAMPLES_SWEEP, m, "--modes", *RATIO_MODES],
                [*ENTRY, "calib-size", "--dataset", "imagenet-samples"]
                + ["--model", m],
            )
        ]
        + [
            ["scripts/imagenet/measure_compression_time.py", "--resume", "--models"]
            + ["mobilenet_v2_q8", "efficientnet_lite0", "--data-root", "datasets/imagenet-samples"]
            + ["--real-calib-size", "1000", "--batch-size", "50", "--ratio", "0.9", "--out"]
            + ["results/imagenet-samples/benchmarks/compression_time.json"],
            ["scripts/imagenet/measure_speed.py", "--models", "mobilenet_v2_q8"]
            + ["efficientnet_lite0", "--ratios", "0.97", "0.9", "--batch-sizes", "1", "8"]
            + ["--warmup", "2", "--repeats", "10"]
            + ["--data-root", "datasets/imagenet-samples", "--calib-size", "1000"]
            + ["--calib-batch-size", "50", "--out-dir", "results/imagenet-samples/benchmarks"],
            ["scripts/render_results.py", "--datasets", "imagenet-samples", "--models"]
            + ["mobilenet_v2_q8", "efficientnet_lite0"],
        ],
    ),
    "compare_svd_vs_actaware.sh": (
        {},
        [],
        [
            ["scripts/compare_svd_vs_actaware.py", "--source", "synthetic"],
            ["scripts/compare_svd_vs_actaware.py", "--source", "checkpoint"]
            + ["--dataset", "fashion-mnist", "--model", "resnet20", "--groups", "4"],
        ],
    ),
}
#: calls that do not forward the caller's arguments, by wrapper and call index
EXPECT_NO_EXTRA = {("imagenet/run_resnext.sh", 2)}
EXPECT_NO_EXTRA |= {("imagenet/run_samples.sh", i) for i in (0, 9, 10, 11)}


def run_wrapper(wrapper: str, env: dict[str, str], args: list[str], tmp_path: Path):
    """Run ``scripts/<wrapper>`` with a recording ``PYTHON``; return (process, script calls).

    ``python -c`` calls (inline checks such as "is balf installed?") are left out of the calls.
    """
    log = tmp_path / "calls.jsonl"
    recorder = tmp_path / "python"
    recorder.write_text(
        "#!/usr/bin/env bash\n"
        'printf \'%s\\0\' "$@" > "$BALF_CALL"; '
        "python3 -c 'import json, os, sys; "
        'args = open(os.environ["BALF_CALL"]).read().split("\\0")[:-1]; '
        'open(os.environ["BALF_LOG"], "a").write(json.dumps(args) + "\\n")\'\n'
    )
    recorder.chmod(0o755)
    full_env = {
        **os.environ,
        **env,
        "PYTHON": str(recorder),
        "BALF_LOG": str(log),
        "BALF_CALL": str(tmp_path / "call.bin"),
    }
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / wrapper), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, [call for call in calls if call[:1] != ["-c"]]  # inline checks, not scripts


@pytest.mark.parametrize("case", sorted(CASES))
def test_wrapper_calls(case: str, tmp_path: Path):
    env, args, expected = CASES[case]
    wrapper = case.split()[0]
    proc, calls = run_wrapper(wrapper, env, [*args, *EXTRA], tmp_path)
    assert proc.returncode == 0, proc.stderr
    wanted = [
        call if (wrapper, i) in EXPECT_NO_EXTRA else [*call, *EXTRA]
        for i, call in enumerate(expected)
    ]
    assert calls == wanted
    for call in calls:
        if call[:2] == ENTRY:  # an experiment of the entry point, on a dataset it knows
            experiment = EXPERIMENTS[call[2]]
            assert call[call.index(experiment.option) + 1] in experiment.choices()
        else:
            assert (REPO / call[0]).is_file(), call[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_wrapper_models_and_modes_are_registered(case: str):
    models, modes = set(list_models()), set(registered_modes())
    for call in CASES[case][2]:
        for flag, known in (("--model", models), ("--arch", models)):
            if flag in call:
                assert call[call.index(flag) + 1] in known
        if "--modes" in call:
            start = call.index("--modes") + 1
            assert set(call[start:]) <= modes


def test_every_python_calling_wrapper_is_covered():
    """A new wrapper that calls Python gets a row in CASES (or this test fails)."""
    covered = {case.split()[0] for case in CASES}
    calling = {
        str(p.relative_to(REPO / "scripts"))
        for p in (REPO / "scripts").rglob("*.sh")
        if "${PYTHON" in p.read_text() or '"$PY"' in p.read_text()
    }
    # these call Python to install, find data or chain other wrappers: run in other tests
    others = {"install.sh", "test.sh", "quickstart.sh", "fashion_mnist/get_data.sh"}
    others |= {"fashion_mnist/run_all.sh", "render_results.sh"}
    assert calling - others <= covered, sorted(calling - others - covered)


def test_pretrain_wrapper_rejects_an_unknown_dataset(tmp_path: Path):
    proc, calls = run_wrapper("cifar10/pretrain_resnet.sh", {}, ["--dataset", "mnist"], tmp_path)
    assert proc.returncode == 2
    assert "unknown dataset 'mnist'" in proc.stderr
    assert calls == []


def test_a_failing_step_stops_the_wrapper(tmp_path: Path):
    """``set -e``: when one call fails, no later call runs and the wrapper fails."""
    failing = tmp_path / "python"
    failing.write_text('#!/usr/bin/env bash\necho "$*" >> "$BALF_LOG"; exit 3\n')
    failing.chmod(0o755)
    log = tmp_path / "calls.txt"
    proc = subprocess.run(
        ["bash", str(REPO / "scripts/cifar10/factorize_sweep.sh")],
        env={**os.environ, "PYTHON": str(failing), "BALF_LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 3
    assert len(log.read_text().splitlines()) == 1
