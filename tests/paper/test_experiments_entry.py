"""``python -m balf_paper.experiments EXPERIMENT --dataset NAME``: the one entry point of the
sweeps (the per-dataset ``.py`` scripts are gone; the ``.sh`` wrappers call it).

- It runs a sweep end to end, and a rerun resumes it (nothing recomputed).
- Every experiment is reached with its selector (``--dataset``; ``--task`` for ``language``);
  the last one given counts, so a wrapper's default is overridden by the caller's.
- Usage errors (no experiment, no or unknown dataset) end with exit status 2 and a message.
- So do bad inputs: an invalid or mistyped YAML config, an ``--out-root`` that is a file or a
  dangling link, a ``--checkpoint`` that is a Git LFS pointer, truncated or holds pickled
  objects, a negative seed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _fixtures import use_only_fixture_fashion_mnist, write_fashion_mnist

from balf.errors import BALFError
from balf_paper.experiments.cli.main import EXPERIMENTS, Experiment, main
from balf_paper.experiments.cli.options import run_script

REPO = Path(__file__).resolve().parents[2]


def _args(root: Path, out: Path) -> list[str]:
    return [
        *("--random-weights", "--data-root", str(root), "--calib-size", "8", "--eval-size", "6"),
        *("--batch-size", "8", "--workers", "0", "--no-progress", "--no-cache"),
        *("--out-root", str(out), "--modes", "flops_auto", "uniform", "--knobs", "0.5", "0.8"),
    ]


def _points(out: Path, mode: str) -> list[dict]:
    points = json.loads((out / "fashion-mnist/resnet20" / mode / "results.json").read_text())
    timing = {"timings", "eval_seconds", "compress_seconds"}  # wall-clock measurements
    return [{k: v for k, v in p.items() if k not in timing} for p in points["points"]]


def test_entry_point_runs_a_sweep_and_a_rerun_resumes_it(tmp_path: Path, monkeypatch):
    root = write_fashion_mnist(tmp_path / "data")
    use_only_fixture_fashion_mnist(monkeypatch, tmp_path)
    argv = ["factorize", "--dataset", "fashion-mnist", *_args(root, tmp_path / "out")]
    main(argv)
    first = {mode: _points(tmp_path / "out", mode) for mode in ("flops_auto", "uniform")}
    for points in first.values():
        assert [p["knob"] for p in points] == ["original", 0.5, 0.8]
        assert all(0 <= p["metrics"]["accuracy"] <= 1 for p in points)
    stored = json.loads((tmp_path / "out/fashion-mnist/resnet20/uniform/results.json").read_text())
    assert stored["format"] == 2 and stored["metric"] == {"name": "accuracy",
                                                          "higher_is_better": True}  # fmt: skip
    assert stored["config"]["task"] == "image-classification"
    command = (tmp_path / "out/fashion-mnist/resnet20/uniform/command.txt").read_text()
    assert command.startswith("python -m balf_paper.experiments factorize --dataset fashion-mnist")
    main(argv)  # resumed: the same points, none recomputed
    assert {mode: _points(tmp_path / "out", mode) for mode in first} == first


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_takes_its_selector_and_the_last_one_counts(name, monkeypatch):
    experiment = EXPERIMENTS[name]
    seen = []
    monkeypatch.setitem(
        EXPERIMENTS, name, Experiment(lambda argv, v: seen.append((v, argv)), experiment.option,
                                      experiment.choices)
    )  # fmt: skip
    first, last = list(experiment.choices())[:2]
    main([name, experiment.option, first, "--seed", "3", f"{experiment.option}={last}"])
    assert seen.pop() == (last, ["--seed", "3"])
    with pytest.raises(BALFError, match=f"{experiment.option} must be one of"):
        main([name, experiment.option, "mnist"])


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "balf_paper.experiments", *args],
        capture_output=True,
        text=True,
        timeout=900,  # generous: a loaded CI machine imports torch slowly
        cwd=REPO,
    )


def test_usage_without_an_experiment_lists_experiments_datasets_and_tasks():
    proc = _run()
    assert proc.returncode == 2
    for name in (*EXPERIMENTS, "cifar10-jpeg", "fashion-mnist", "wikitext", "stsb"):
        assert name in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["factorize"], "--dataset is required"),
        (["factorize", "--dataset", "mnist"], "--dataset must be one of"),
        (["compress", "--dataset", "cifar10"], "invalid choice: 'compress'"),
    ],
)
def test_usage_errors_exit_2_with_a_message(args, message):
    proc = _run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_experiment_help_shows_the_datasets_yaml_defaults():
    proc = _run("n-iters", "--dataset", "fashion-mnist", "--help")
    assert proc.returncode == 0
    assert "--n-iters-values" in proc.stdout


# -- bad inputs: a message and exit status 2, never a traceback ----------------------------------


def _exit_message(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the entry point as ``python -m balf_paper.experiments`` does (in this process)."""
    with pytest.raises(SystemExit) as done:
        run_script(lambda: main(argv))
    err = capsys.readouterr().err
    assert done.value.code == 2, err
    assert "Traceback" not in err
    return err


YAML_CASES = {
    "invalid-yaml": ("knobs: [0.5, 0.8\n", "is not valid YAML"),
    "scalar-for-a-list": ("knobs: 0.5\n", "option 'knobs' takes a list"),
    "list-for-a-scalar": ("calib-size: [8, 16]\n", "option 'calib-size' takes one value"),
    "wrong-type": ("calib-size: many\n", "option 'calib-size': invalid value 'many'"),
    "negative-seed": ("seeds: [0, -1]\n", "option 'seeds': invalid value -1"),
    "not-a-mapping": ("- knobs\n", "not a mapping of option names"),
}


@pytest.mark.parametrize("case", list(YAML_CASES), ids=list(YAML_CASES))
def test_a_bad_yaml_config_is_a_message(case, tmp_path, capsys):
    text, message = YAML_CASES[case]
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    err = _exit_message(["factorize", "--dataset", "fashion-mnist", "--config", str(config)],
                        capsys)  # fmt: skip
    assert str(config) in err and message in err


@pytest.mark.parametrize("kind", ["file", "dangling-link", "below-a-file"])
def test_an_out_root_that_cannot_be_a_folder_is_a_message(kind, tmp_path, capsys):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("")
    elif kind == "dangling-link":
        out.symlink_to(tmp_path / "gone")
    else:
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "out"
    err = _exit_message(["factorize", "--dataset", "fashion-mnist", "--out-root", str(out)],
                        capsys)  # fmt: skip
    assert f"--out-root {out}" in err


def test_a_negative_seed_is_refused(capsys):
    with pytest.raises(SystemExit) as done:
        main(["factorize", "--dataset", "fashion-mnist", "--seeds", "0", "-1"])
    assert done.value.code == 2
    assert "--seeds: must be 0 or more, got -1" in capsys.readouterr().err


def _checkpoint(kind: str, path: Path) -> Path:
    import torch

    from balf_paper.models import create_model, save_checkpoint

    model = create_model("resnet20", pretrained=False, in_channels=1)
    good = save_checkpoint(model, path.with_suffix(".good"))
    if kind == "lfs-pointer":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:1000])
    else:  # a whole model object pickled: refused by weights_only loading
        torch.save(model, path)
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("lfs-pointer", "is a Git LFS pointer, not the weights"),
        ("truncated", "is empty, truncated or of another format"),
        ("pickled-object", "holds Python objects other than tensors"),
    ],
)
def test_an_unusable_checkpoint_is_a_message(kind, message, tmp_path, monkeypatch, capsys):
    root = write_fashion_mnist(tmp_path / "data")
    use_only_fixture_fashion_mnist(monkeypatch, tmp_path)
    checkpoint = _checkpoint(kind, tmp_path / "model.pt")
    argv = [a for a in _args(root, tmp_path / "out") if a != "--random-weights"]
    err = _exit_message(["factorize", "--dataset", "fashion-mnist", *argv,
                         "--checkpoint", str(checkpoint)], capsys)  # fmt: skip
    assert str(checkpoint) in err and message in err


CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_a_variant_config_lists_only_what_differs_from_its_base(path: Path):
    import yaml

    from balf_paper.experiments.cli.options import EXTENDS, read_config

    own = yaml.safe_load(path.read_text()) or {}
    if EXTENDS not in own:
        return
    base = read_config(path.parent / own[EXTENDS])
    repeated = [k for k in own if k != EXTENDS
                and base.get(k.replace("-", "_"), (0, 0, object()))[2] == own[k]]  # fmt: skip
    assert repeated == [], f"{path.name} repeats its base's {repeated}"
    assert {k for k in read_config(path)} >= {k for k in base}  # every base key inherited


def test_extends_overrides_and_its_errors_name_the_files(tmp_path: Path):
    from balf_paper.experiments.cli.options import read_config

    (tmp_path / "base.yaml").write_text("model: resnet20\ncalib-size: 1024\n")
    (tmp_path / "variant.yaml").write_text("extends: base.yaml\ncalib_size: 8\n")
    assert {k: v for k, (_, _, v) in read_config(tmp_path / "variant.yaml").items()} == {
        "model": "resnet20", "calib_size": 8}  # fmt: skip
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(BALFError, match=r"'extends' loops \(a.yaml -> b.yaml -> a.yaml\)"):
        read_config(tmp_path / "a.yaml")
    (tmp_path / "lost.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(BALFError, match="lost.yaml: extends nowhere.yaml, which is not found"):
        read_config(tmp_path / "lost.yaml")
