"""Calibration under shift (``calib-shift``): corrupted calibration copies, clean evaluation.

End to end on a tiny CIFAR-10 (JPEG release) and a tiny ImageNet in the real layouts with random
weights: the sets and folders, the cache and its manifest, clean evaluation whatever the
calibration, seeds, resuming, rendering; and the raw-image extraction the corruption needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _experiments import experiment
from _fixtures import (
    tiny_sweep_args,
    write_cifar10_jpeg,
    write_imagenet,
    write_imagenet_c,
    write_imagenet_v2,
)
from torch.utils.data import Subset

from balf.errors import BALFError
from balf_paper.data import shifted_calibration
from balf_paper.data.imagenet import imagenet_folder
from balf_paper.data.shifted_calibration import NormalisedImages, raw_images, shifted_images
from balf_paper.experiments.cli.main import main as experiments_main
from balf_paper.experiments.render.calib_shift import (
    calib_shift_group_table,
    calib_shift_table,
    load_calib_shift,
)
from balf_paper.experiments.render.tree import render_model
from balf_paper.experiments.tasks.image.data import experiment_data
from balf_paper.models import eval_transform

SETS = ["clean", "gaussian_noise-s1", "gaussian_noise-s3", "contrast-s3"]


@pytest.fixture
def jpeg_root(tmp_path: Path) -> Path:
    return write_cifar10_jpeg(tmp_path / "cifar10-jpeg", train=2, test=1)


def test_raw_images_invert_the_preprocessing_exactly(jpeg_root):
    """Normalising the extracted uint8 images gives back the dataset's own items."""
    data = experiment_data("cifar10-jpeg", jpeg_root, "resnet20", 8, seed=1)
    raw = raw_images(data.calibration)
    assert raw.images.shape == (8, 32, 32, 3) and raw.images.dtype == np.uint8
    again = NormalisedImages(raw.images, raw.labels, raw.mean, raw.std)
    for i in range(8):
        image, label = data.calibration[i]
        assert label == again[i][1]
        torch.testing.assert_close(again[i][0], image, rtol=0, atol=1e-5)


def test_raw_images_of_imagenet_are_the_224_crops(tmp_path):
    root = write_imagenet(tmp_path / "data", size=40)
    folder = imagenet_folder(root / "imagenet-calib", eval_transform("resnet18"))
    subset = Subset(Subset(folder, [0, 2, 3]), [2, 0])  # nested subsets: items 3 and 0
    raw = raw_images(subset)
    assert raw.images.shape == (2, 224, 224, 3)
    again = NormalisedImages(raw.images, raw.labels, raw.mean, raw.std)
    for i, j in enumerate([3, 0]):
        torch.testing.assert_close(again[i][0], folder[j][0], rtol=0, atol=1e-5)
        assert again[i][1] == folder[j][1]


def test_unsupported_preprocessing_is_a_clear_error(jpeg_root):
    data = experiment_data("cifar10-jpeg", jpeg_root, "resnet20", 4)
    data.calibration.dataset.transform = lambda x: x  # an extra transform after normalising
    with pytest.raises(BALFError, match="without extra transform"):
        raw_images(data.calibration)


def test_cache_reuses_verified_sets_and_rebuilds_damaged_ones(jpeg_root, tmp_path, monkeypatch):
    raw = raw_images(experiment_data("cifar10-jpeg", jpeg_root, "resnet20", 6).calibration)
    images, entry = shifted_images(tmp_path / "cache", "t", raw, "gaussian_noise", 3, seed=0)
    assert images.shape == raw.images.shape and not np.array_equal(images, raw.images)
    folder = Path(entry["folder"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sets"]["gaussian_noise-s3"]["sha256"] == entry["sha256"]
    assert manifest["settings"]["images"] == 6 and manifest["settings"]["seed"] == 0

    calls = []
    real = shifted_calibration.corrupt_images
    monkeypatch.setattr(shifted_calibration, "corrupt_images",
                        lambda *a, **k: calls.append(a) or real(*a, **k))  # fmt: skip
    again, _ = shifted_images(tmp_path / "cache", "t", raw, "gaussian_noise", 3, seed=0)
    assert np.array_equal(again, images) and calls == []  # read from the cache
    np.save(folder / "gaussian_noise-s3.npy", np.zeros_like(images))  # damaged file
    rebuilt, _ = shifted_images(tmp_path / "cache", "t", raw, "gaussian_noise", 3, seed=0)
    assert np.array_equal(rebuilt, images) and len(calls) == 1
    assert not list(folder.glob("*.tmp*"))


def _calib_shift(jpeg_root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["calib-shift", "--dataset", "cifar10-jpeg", *tiny_sweep_args(jpeg_root, tmp_path),
            "--shift-root", str(tmp_path / "shift"), "--modes", "flops_auto", "params_auto",
            "--ratios", "0.5", "0.8", "--corruptions", "gaussian_noise", "contrast",
            "--severities", "1", "3", *extra]  # fmt: skip


def test_calib_shift_end_to_end(jpeg_root, tmp_path):
    argv = _calib_shift(jpeg_root, tmp_path, "--seeds", "0", "1")
    experiments_main(argv)
    model_dir = tmp_path / "results" / "cifar10-jpeg" / "resnet20"
    out = model_dir / "calib-shift"
    sets = sorted(p.name for p in out.iterdir())
    assert sets == sorted(["clean", "gaussian_noise-s1", "gaussian_noise-s3", "contrast-s1",
                           "contrast-s3"])  # fmt: skip
    originals, ranks = set(), {}
    for name in sets:
        for mode in ("flops_auto", "params_auto"):
            for seed, folder in ((0, out / name / mode), (1, out / name / mode / "seed1")):
                results = json.loads((folder / "results.json").read_text())
                config = results["config"]
                assert config["seed"] == seed and config["calibration_shift"]["set"] == name
                if name != "clean":
                    corruption, severity = name.rsplit("-s", 1)
                    shift = config["calibration_shift"]
                    assert shift["corruption"] == corruption
                    assert shift["severity"] == int(severity)
                    assert shift["group"] == ("noise" if corruption == "gaussian_noise"
                                              else "digital")  # fmt: skip
                points = results["points"]
                assert [p["knob"] for p in points] == ["original", 0.5, 0.8]
                assert all(p["eval_samples"] == 6 for p in points)
                originals.add(points[0]["metrics"]["accuracy"])
                ranks[(name, mode, seed)] = points[1]["ranks"]
    assert len(originals) == 1  # every set is evaluated on the same clean images
    # the calibration images matter: shifted statistics give other ranks somewhere
    assert any(ranks[(n, "params_auto", 0)] != ranks[("clean", "params_auto", 0)]
               for n in sets if n != "clean")  # fmt: skip
    # cached corrupted copies: one folder per seed's clean subset, with a manifest
    manifests = list((tmp_path / "shift").glob("*/manifest.json"))
    assert len(manifests) == 2
    assert all(len(json.loads(m.read_text())["sets"]) == 4 for m in manifests)

    # resumed: nothing new on a rerun
    before = {p: p.read_text() for p in out.rglob("results.json")}
    experiments_main(argv)
    assert {p: p.read_text() for p in out.rglob("results.json")} == before

    runs = load_calib_shift(model_dir)
    assert list(runs)[0] == "clean" and set(runs) == set(sets)
    table = calib_shift_table(runs)
    assert "±" in str(table.loc["clean"].iloc[0])  # two seeds: mean ± std
    groups = calib_shift_group_table(runs)
    assert [i.split()[0] for i in groups.index] == ["noise", "digital"]
    clean_acc = runs["clean"]["flops_auto"]["points"][1]["metrics"]["accuracy"]
    noise = [runs[s]["flops_auto"]["points"][1]["metrics"]["accuracy"] for s in sets
             if "noise" in s]  # fmt: skip
    expected = 100 * (sum(noise) / len(noise) - clean_acc)
    assert groups.loc["noise (2 sets)"].iloc[1] == pytest.approx(expected)  # flops_auto 0.5
    files = render_model(model_dir, "cifar10-jpeg", "resnet20", formats=("png",))
    assert model_dir / "figures" / "calib_shift.png" in files
    assert (model_dir / "tables" / "calib_shift_groups.md").is_file()


def test_calib_shift_script_and_unknown_corruption(jpeg_root, tmp_path):
    script = experiment("calib-shift", "cifar10")
    argv = _calib_shift(jpeg_root, tmp_path)[1:]
    argv[argv.index("gaussian_noise")] = "not_a_corruption"
    with pytest.raises(BALFError, match="not_a_corruption"):
        script.main(argv)


def test_calib_shift_on_imagenet_c_and_v2(tmp_path):
    """ImageNet: calibration sets read from ImageNet-C and ImageNet-V2 layouts."""

    root = write_imagenet(tmp_path / "data")
    wnids = sorted(p.name for p in (root / "imagenet-val").iterdir())
    c_root = write_imagenet_c(tmp_path / "imagenet-c", wnids, {"fog": [2]})
    v2_root = write_imagenet_v2(tmp_path / "v2", [0, 1, 2])
    torch.manual_seed(0)
    script = experiment("calib-shift", "imagenet")
    script.main([*tiny_sweep_args(root, tmp_path, calib_size=4), "--model", "resnet18",
                 "--eval-size", "2", "--modes", "flops_auto", "--ratios", "0.5",
                 "--corruptions", "fog", "--severities", "2",
                 "--imagenet-c-root", str(c_root), "--imagenet-v2-root", str(v2_root)])  # fmt: skip
    out = tmp_path / "results" / "imagenet" / "resnet18" / "calib-shift"
    assert sorted(p.name for p in out.iterdir()) == [
        "clean", "fog-s2", "imagenet-v2-matched-frequency"]  # fmt: skip
    fog = json.loads((out / "fog-s2" / "flops_auto" / "results.json").read_text())
    assert fog["config"]["calibration_shift"]["source"] == "imagenet-c"
    v2 = json.loads(
        (out / "imagenet-v2-matched-frequency" / "flops_auto" / "results.json").read_text()
    )
    assert v2["config"]["calibration_shift"]["group"] == "imagenet-v2"
