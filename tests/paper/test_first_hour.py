"""A clean first hour: the quickstart leaves the checkout clean and compares its run
with the committed reference; scripts report missing inputs as one message (exit 2) and check
local inputs before any download; ``--help`` shows the YAML's defaults.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _fixtures import load_script, use_only_fixture_fashion_mnist, write_fashion_mnist

from balf.errors import DatasetNotFoundError, WeightsNotFoundError
from balf_paper.experiments.cli import options, setting

REPO = Path(__file__).resolve().parents[2]
MODES = ("flops_auto", "energy", "energy_act_aware", "uniform")


def _git_status() -> set[str]:
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.splitlines())


def test_quickstart_writes_its_run_outside_the_tracked_results():
    config = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    run = Path(config["out-root"])
    assert not run.is_absolute() and run.parts[0] == "runs"
    probe = run / "fashion-mnist" / "resnet20" / "flops_auto" / "results.json"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=REPO)
    assert ignored.returncode == 0, f"{probe} is not git-ignored"
    reference = REPO / config["reference"] / "fashion-mnist" / "resnet20"
    assert all((reference / m / "results.json").is_file() for m in MODES)


@pytest.fixture
def quickstart_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = write_fashion_mnist(tmp_path / "data")
    use_only_fixture_fashion_mnist(monkeypatch, tmp_path)
    script = load_script("fashion_mnist/quickstart.py")
    argv = [
        "--random-weights",
        *("--data-root", str(root), "--calib-size", "8", "--eval-size", "6"),
        *("--batch-size", "8", "--workers", "0", "--no-progress"),
        *("--out-root", str(tmp_path / "runs"), "--cache-root", str(tmp_path)),
        *("--ratios", "0.5"),
        *("--energy-thresholds", "0.9"),
        *("--energy-act-aware-thresholds", "0.9"),
    ]
    return script, argv, tmp_path


def test_quickstart_leaves_git_clean_and_compares_with_the_reference(quickstart_run, capsys):
    script, argv, tmp_path = quickstart_run
    before = _git_status()
    script.main([*argv, "--reference", ""])
    assert _git_status() == before  # nothing written into the checkout
    run = tmp_path / "runs" / "fashion-mnist" / "resnet20"
    printed = capsys.readouterr().out
    assert all(f"{run / m / 'results.json'}" in printed for m in MODES)  # "Written:" lists them

    # the same run as reference: it matches; a changed reference: each difference is listed
    shutil.copytree(tmp_path / "runs", tmp_path / "reference")
    script.main([*argv, "--resume", "--reference", str(tmp_path / "reference")])
    printed = capsys.readouterr().out
    assert "matches the committed results" in printed and "to 10 decimals" in printed
    path = tmp_path / "reference" / "fashion-mnist" / "resnet20" / "energy" / "results.json"
    results = json.loads(path.read_text())
    results["points"][1]["metrics"]["accuracy"] += 0.01
    path.write_text(json.dumps(results))
    script.main([*argv, "--resume", "--reference", str(tmp_path / "reference")])
    printed = capsys.readouterr().out
    assert "differs from the committed results" in printed
    assert "energy 0.9: accuracy" in printed


def test_compare_runs_lists_missing_points_and_rank_changes(tmp_path: Path):
    from balf_paper.experiments.render.compare import compare_runs

    point = {"knob": 0.5, "accuracy": 0.9, "loss": 0.3, "flops_ratio": 0.5, "params_ratio": 0.4}
    for name, ranks, extra in (("a", {"l": 3}, []), ("b", {"l": 4}, [{**point, "knob": 0.7}])):
        (tmp_path / name / "m").mkdir(parents=True)
        pts = [{**point, "accuracy": 0.9 + (1e-7 if name == "b" else 0), "ranks": ranks}, *extra]
        (tmp_path / name / "m" / "results.json").write_text(json.dumps({"points": pts}))
    c = compare_runs(tmp_path / "a", tmp_path / "b", ["m"])
    assert c.decimals == 6
    assert c.differences == ["m 0.7: point missing from this run", "m 0.5: ranks differ at l"]


def test_help_shows_the_yaml_defaults(capsys):
    with pytest.raises(SystemExit):
        load_script("fashion_mnist/quickstart.py").main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: runs/quickstart)" in text
    assert "(default: [0.4, 0.5, 0.6, 0.7, 0.8, 0.9])" in text
    assert "Defaults shown are those of" in text


def test_a_missing_checkpoint_is_one_message_and_exit_2(tmp_path: Path):
    missing = tmp_path / "nowhere" / "model.pt"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "balf_paper.experiments", "factorize"),
            *("--dataset", "fashion-mnist"),
            *("--checkpoint", str(missing), "--data-root", str(tmp_path / "no-data")),
            *("--out-root", str(tmp_path / "out"), "--no-progress"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO / "lib")},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert lines == [
        f"balf_paper.experiments: error: no trained resnet20 for fashion-mnist at {missing}. Train "
        "one with `python scripts/cifar10/pretrain_resnet.py --dataset fashion-mnist --arch "
        f"resnet20 --out-dir {missing.parent}`, or pass --checkpoint PATH."
    ]


def _args(tmp_path: Path, **overrides) -> object:
    parser = __import__("argparse").ArgumentParser()
    options.add_common_arguments(parser)
    args = parser.parse_args(["--data-root", str(tmp_path / "no-data"), "--no-cache"])
    for k, v in overrides.items():
        setattr(args, k, v)
    return args


def test_local_inputs_are_checked_before_any_download(tmp_path: Path, monkeypatch):
    def no_download(*a, **k):
        raise AssertionError("a download was attempted before the local inputs were checked")

    # ImageNet: the local data is checked before the public weights are downloaded
    monkeypatch.setattr(setting, "experiment_model", no_download)
    with pytest.raises(DatasetNotFoundError):
        setting.ImageSetting(_args(tmp_path, model="resnet18"), "imagenet")
    # Fashion-MNIST: the local checkpoint is checked before the data is downloaded
    monkeypatch.setattr(setting, "experiment_data", no_download)
    with pytest.raises(WeightsNotFoundError, match="pass --checkpoint PATH"):
        setting.ImageSetting(_args(tmp_path, checkpoint=str(tmp_path / "x.pt")), "fashion-mnist")
