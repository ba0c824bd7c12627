"""CIFAR-10 (JPEG release): the image-folder loader, get_data.sh, every CIFAR-10 script with
``--dataset cifar10-jpeg`` on tiny JPEG folders, the option-A third-party family and the labelling
of results on this copy."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from _experiments import experiment
from _fixtures import REPO, load_script, tiny_sweep_args, write_cifar10_jpeg
from PIL import Image

from balf.errors import BALFError, DatasetNotFoundError
from balf_paper.data import CIFAR10_CLASSES, CIFAR10C, ImageFolderTensors, load_image_folder
from balf_paper.experiments.render import plots
from balf_paper.experiments.render.labels import dataset_label, other_works_source
from balf_paper.experiments.render.tree import render_model
from balf_paper.experiments.tasks.image.data import experiment_data, experiment_model
from balf_paper.models import (
    THIRD_PARTY_CHECKPOINTS,
    create_model,
    load_third_party_checkpoint,
    normalisation_of,
)

SHARED_MODELS = REPO.parent / "shared" / "models" / "cifar10-resnets-akamaster"


@pytest.fixture
def jpeg_root(tmp_path: Path) -> Path:
    return write_cifar10_jpeg(tmp_path / "cifar10-jpeg", train=2, test=1)


# --- the loader -----------------------------------------------------------------------------------


def test_labels_follow_cifar10_class_order_and_files_are_sorted(jpeg_root):
    images, labels = load_image_folder(jpeg_root, "train", CIFAR10_CLASSES)
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [c for c in range(10) for _ in range(2)]
    first_truck = np.array(Image.open(jpeg_root / "train" / "truck" / "0000.jpg").convert("RGB"))
    assert torch.equal(images[18], torch.from_numpy(first_truck).permute(2, 0, 1))


def test_lazy_and_preloaded_datasets_give_the_same_normalised_items(jpeg_root):
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    eager = ImageFolderTensors(jpeg_root, "test", CIFAR10_CLASSES, mean, std)
    lazy = ImageFolderTensors(jpeg_root, "test", CIFAR10_CLASSES, mean, std, preload=False)
    assert len(eager) == len(lazy) == 10
    for i in range(10):
        (a, la), (b, lb) = eager[i], lazy[i]
        assert la == lb == i
        assert torch.equal(a, b)
    raw = eager.images[3].double() / 255
    expected = (raw - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(eager[3][0].double(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("damage", ["no-split", "no-class", "empty-class"])
def test_missing_folders_name_the_layout_and_the_fix(jpeg_root, damage):
    import shutil

    if damage == "no-split":
        shutil.rmtree(jpeg_root / "test")
    elif damage == "no-class":
        shutil.rmtree(jpeg_root / "test" / "ship")
    else:
        for f in (jpeg_root / "test" / "ship").iterdir():
            f.unlink()
    with pytest.raises(DatasetNotFoundError, match=r"test/<class>/\*\.jpg") as info:
        experiment_data("cifar10-jpeg", jpeg_root, "resnet20", calib_size=4)
    assert "get_data.sh" in str(info.value)


def test_images_of_several_sizes_are_refused(jpeg_root):
    Image.new("RGB", (16, 16)).save(jpeg_root / "test" / "cat" / "9999.jpg")
    with pytest.raises(DatasetNotFoundError, match="several sizes"):
        load_image_folder(jpeg_root, "test", CIFAR10_CLASSES)


def test_experiment_data_uses_the_model_normalisation(jpeg_root):
    ours = experiment_data("cifar10-jpeg", jpeg_root, "resnet20", calib_size=4)
    theirs = experiment_data("cifar10-jpeg", jpeg_root, "resnet20a", calib_size=4)
    assert len(ours.calibration) == 4 and len(ours.evaluation) == 10
    first = ours.evaluation.indices[0] if hasattr(ours.evaluation, "indices") else 0
    raw = load_image_folder(jpeg_root, "test", CIFAR10_CLASSES)[0][first].float() / 255
    for data, model in ((ours, "resnet20"), (theirs, "resnet20a")):
        mean, std = (torch.tensor(v).view(3, 1, 1) for v in normalisation_of(model, "cifar10-jpeg"))
        torch.testing.assert_close(data.evaluation[0][0], (raw - mean) / std)
    assert normalisation_of("resnet20a", "cifar10-jpeg") != normalisation_of("resnet20", "cifar10")


# --- get_data.sh ----------------------------------------------------------------------------------


def _get_data(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "cifar10" / "get_data.sh"), *args],
        capture_output=True,
        text=True,
    )


def test_get_data_extracts_the_archive_and_prints_the_folder(tmp_path):
    source = write_cifar10_jpeg(tmp_path / "src" / "cifar10-jpeg", train=1, test=1)
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="cifar10-jpeg")
    dest = tmp_path / "datasets" / "cifar10-jpeg"
    run = _get_data(str(archive), str(dest))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == str(dest)
    assert len(load_image_folder(dest, "test", CIFAR10_CLASSES)[1]) == 10
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".cifar10-jpeg")]
    again = _get_data(str(archive), str(dest))  # already there: nothing to do
    assert again.returncode == 0 and "already" in again.stdout


def test_get_data_accepts_an_extracted_folder_and_refuses_a_missing_source(tmp_path):
    source = write_cifar10_jpeg(tmp_path / "copy", train=1, test=1)
    run = _get_data(str(source), str(tmp_path / "unused"))
    assert run.returncode == 0 and run.stdout.strip().splitlines()[-1] == str(source)
    missing = _get_data(str(tmp_path / "nowhere.tar.gz"), str(tmp_path / "d"))
    assert missing.returncode == 2 and "nowhere.tar.gz not found" in missing.stderr


# --- the option-A third-party family ------------------------------------------------------------


@pytest.mark.parametrize("name", list(THIRD_PARTY_CHECKPOINTS))
def test_option_a_shortcuts_are_parameter_free(name):
    model = create_model(name, pretrained=False)
    blocks, _ = THIRD_PARTY_CHECKPOINTS[name]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6 * blocks + 1  # no projection convs: depth 6n + 2 with the classifier
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    x = torch.randn(1, 16, 32, 32)
    out = model.layer2[0].shortcut(x)
    assert out.shape == (1, 32, 16, 16)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2]) and not out[:, :8].any()


def test_third_party_checkpoint_round_trip_with_module_prefix(tmp_path):
    source = create_model("resnet20a", pretrained=False).eval()
    for m in source.modules():  # non-trivial BN statistics, so that every entry matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    assert {"module.conv1.weight", "module.layer3.2.bn2.running_var", "module.linear.bias"} <= set(
        state
    )
    path = tmp_path / "resnet20-00000000.th"
    torch.save({"state_dict": state, "best_prec1": 91.5}, path)
    loaded = create_model("resnet20a", pretrained=False)
    assert load_third_party_checkpoint(loaded, path) == {"best_prec1": 91.5}
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(loaded.eval()(x), source(x))

    model, weights = experiment_model("cifar10-jpeg", "resnet20a", checkpoint=path)
    assert weights.startswith(f"{path}@") and torch.equal(model(x), source(x))
    with pytest.raises(BALFError, match="does not match"):
        load_third_party_checkpoint(create_model("resnet56a", pretrained=False), path)


def test_missing_third_party_checkpoint_says_where_it_comes_from(tmp_path):
    with pytest.raises(FileNotFoundError, match="akamaster/pytorch_resnet_cifar10"):
        experiment_model("cifar10-jpeg", "resnet20a", checkpoint=tmp_path / "none.th")


@pytest.mark.skipif(not SHARED_MODELS.is_dir(), reason="the project's shared models are absent")
@pytest.mark.parametrize("name", list(THIRD_PARTY_CHECKPOINTS))
def test_the_published_checkpoints_load_strictly(name):
    model = create_model(name, pretrained=False)
    meta = load_third_party_checkpoint(model, SHARED_MODELS / THIRD_PARTY_CHECKPOINTS[name][1])
    assert 91.0 < meta["best_prec1"] < 94.0


# --- every CIFAR-10 script with --dataset cifar10-jpeg ------------------------------------------


def _common(root: Path, tmp_path: Path) -> list[str]:
    return ["--dataset", "cifar10-jpeg", *tiny_sweep_args(root, tmp_path)]


def test_sweeps_write_under_their_own_dataset_name(jpeg_root, tmp_path):
    experiment("factorize", "cifar10")(
        [*_common(jpeg_root, tmp_path), "--modes", "flops_auto", "energy", "--knobs", "0.6"]
    )
    experiment("n-iters", "cifar10")(
        [*_common(jpeg_root, tmp_path), "--n-iters-values", "2", "--ratios", "0.6"]
    )
    experiment("calib-size", "cifar10")(
        [*_common(jpeg_root, tmp_path), "--calib-sizes", "4", "--ratios", "0.7"]
    )
    out = tmp_path / "results" / "cifar10-jpeg" / "resnet20"
    for run in ("flops_auto", "energy", "n-iters/iters2", "calib-size/calib4"):
        results = json.loads((out / run / "results.json").read_text())
        assert results["config"]["dataset"] == "cifar10-jpeg"
        assert results["config"]["extra"]["data_root"] == str(jpeg_root)
        assert [p["knob"] for p in results["points"]][0] == "original"
    assert not (tmp_path / "results" / "cifar10").exists()


def test_corrupted_sweep_on_a_cifar10c_made_by_the_repository(jpeg_root, tmp_path):
    pytest.importorskip("imagecorruptions")
    corrupted = tmp_path / "c10c"
    manifest = load_script("cifar10/make_corrupted.py").main(
        [
            "--data-root",
            str(jpeg_root),
            "--out",
            str(corrupted),
            "--corruptions",
            "fog",
            "gaussian_noise",
            "--no-progress",
        ]
    )
    assert manifest["settings"]["source"] == "cifar10-jpeg test"
    fog = np.load(corrupted / "fog.npy")
    assert fog.shape == (50, 32, 32, 3) and fog.dtype == np.uint8
    clean = load_image_folder(jpeg_root, "test", CIFAR10_CLASSES)[0].permute(0, 2, 3, 1).numpy()
    assert not np.array_equal(fog[:10], clean)
    block = CIFAR10C(corrupted, "gaussian_noise", 5)
    assert len(block) == 10 and block.targets.tolist() == list(range(10))

    experiment("corrupted", "cifar10")(
        [
            *_common(jpeg_root, tmp_path),
            "--corrupted-root",
            str(corrupted),
            "--modes",
            "params_auto",
            "--ratios",
            "0.7",
            "--corruptions",
            "fog",
            "--severities",
            "1",
        ]
    )
    run = tmp_path / "results" / "cifar10-jpeg" / "resnet20" / "corruption" / "params_auto"
    points = json.loads((run / "results.json").read_text())["points"]
    assert all(set(p["metrics"]["corrupted"]) == {"fog"} for p in points)


def test_third_party_model_sweeps_from_its_checkpoint(jpeg_root, tmp_path):
    path = tmp_path / "resnet20-fixture.th"
    model = create_model("resnet20a", pretrained=False)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    argv = [a for a in _common(jpeg_root, tmp_path) if a != "--random-weights"]
    experiment("factorize", "cifar10")(
        [*argv, "--model", "resnet20a", "--checkpoint", str(path), "--modes", "energy_act_aware"]
    )
    run = tmp_path / "results" / "cifar10-jpeg" / "resnet20a" / "energy_act_aware"
    results = json.loads((run / "results.json").read_text())
    assert results["config"]["weights"].startswith(str(path))
    assert len(results["points"]) > 2  # the paper's ResNet-20 thresholds, taken by depth


def test_pretraining_on_the_jpeg_release(jpeg_root, tmp_path):
    script = load_script("cifar10/pretrain_resnet.py")
    out = tmp_path / "run"
    argv = ["--arch", "resnet20", "--dataset", "cifar10-jpeg", "--data-root", str(jpeg_root)]
    argv += ["--out-dir", str(out), "--epochs", "1", "--batch-size", "8", "--device", "cpu"]
    assert script.main(argv) == 0
    meta = torch.load(out / "model.pt", weights_only=True)["metadata"]
    assert meta["dataset"] == "cifar10-jpeg" and meta["in_channels"] == 3
    model, _ = experiment_model("cifar10-jpeg", "resnet20", checkpoint=out / "model.pt")
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


# --- labelling ------------------------------------------------------------------------------------


def test_results_on_the_jpeg_release_are_labelled_as_such(tmp_path, monkeypatch):
    assert dataset_label("cifar10-jpeg") == "CIFAR-10 (JPEG release)"
    assert dataset_label("cifar10") == "cifar10"  # unchanged for the original release
    assert other_works_source("cifar10-jpeg", "resnet20a") == (
        "cifar10",
        "resnet20",
        "original CIFAR-10",
    )
    model_dir = tmp_path / "results" / "cifar10-jpeg" / "resnet20"
    for mode, accs in (("flops_auto", (0.85, 0.8)), ("energy", (0.85, 0.6))):
        points = [
            {"knob": "original", "accuracy": accs[0], "loss": 0.5, "flops_ratio": 1.0,
             "params_ratio": 1.0, "ranks": {}},
            {"knob": 0.5, "accuracy": accs[1], "loss": 0.9, "flops_ratio": 0.5,
             "params_ratio": 0.5, "ranks": {"conv": 3}},
        ]  # fmt: skip
        (model_dir / mode).mkdir(parents=True)
        config = {"mode": mode, "dataset": "cifar10-jpeg", "model": "resnet20"}
        (model_dir / mode / "results.json").write_text(
            json.dumps({"config": config, "environment": {}, "points": points})
        )
    works = plots.load_other_works(REPO / "data" / "other_works.csv")
    figures = []
    original_save = plots.save_figure
    monkeypatch.setattr(
        plots,
        "save_figure",
        lambda fig, *a, **k: figures.append(fig) or original_save(fig, *a, **k),
    )
    written = render_model(
        model_dir, "cifar10-jpeg", "resnet20", other_works=works, formats=["png"]
    )
    captions = [p.read_text() for p in written if p.suffix in (".md", ".tex")]
    assert captions and all("CIFAR-10 (JPEG release)" in c for c in captions)
    assert figures
    for fig in figures:
        ax = fig.axes[0]
        assert ax.get_title().startswith("CIFAR-10 (JPEG release)")
        reported = [t.get_text() for t in ax.get_legend().get_texts() if "reported" in t.get_text()]
        assert reported and all("original CIFAR-10" in t for t in reported)


def test_factorize_wrapper_runs_the_six_modes_and_model_folding(jpeg_root, tmp_path):
    env = {**os.environ, "MODELS": "resnet20", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "cifar10" / "factorize_sweep.sh"),
            *_common(jpeg_root, tmp_path),
        ]
        + ["--knobs", "0.6"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = tmp_path / "results" / "cifar10-jpeg" / "resnet20"
    modes = ["flops_auto", "params_auto", "energy", "energy_act_aware", "uniform"]
    for mode in [*modes, "uniform_act_aware", "folding_ar", "folding_r"]:
        points = json.loads((out / mode / "results.json").read_text())["points"]
        assert [p["knob"] for p in points] == ["original", 0.6], mode
