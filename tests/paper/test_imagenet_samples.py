"""The ImageNet samples laid out as ImageNet folders, and the dataset ``imagenet-samples``.

Fixtures are written in the shared folder's real layout (``val1300/`` + ``val1300_labels.txt``,
``train1000/<wnid>_<name>.JPEG``, ``synset_words.txt`` with 1,000 sorted WordNet ids).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _experiments import experiment
from _fixtures import IMAGENET_SAMPLES_TRAIN as TRAIN
from _fixtures import IMAGENET_SAMPLES_VAL as VAL
from _fixtures import IMAGENET_SAMPLES_WNIDS as WNIDS
from _fixtures import tiny_sweep_args, write_imagenet_samples, write_noise_jpeg

from balf.errors import BALFError, DatasetNotFoundError
from balf_paper.data import dataset_info, imagenet_folder
from balf_paper.data.imagenet_samples import (
    SAMPLES_LABEL,
    layout_imagenet_samples,
    read_val_labels,
    samples_root,
)
from balf_paper.experiments.render.labels import dataset_label
from balf_paper.models import preprocessing_of

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "imagenet-samples"
@pytest.fixture
def shared(tmp_path):
    return write_imagenet_samples(tmp_path / "shared")


def test_layout_puts_each_image_under_its_class(shared, tmp_path):
    val, calib = layout_imagenet_samples(shared, tmp_path / "out")
    assert (val, calib) == (tmp_path / "out" / "imagenet-val", tmp_path / "out" / "imagenet-calib")
    # every class has a folder (empty ones too), so indices are those of pretrained classifiers
    assert sorted(p.name for p in val.iterdir() if p.is_dir()) == WNIDS
    assert sorted(p.name for p in calib.iterdir() if p.is_dir()) == WNIDS
    for name, index in VAL:
        assert (val / WNIDS[index] / name).read_bytes() == (shared / "val1300" / name).read_bytes()
    # the ImageNet reader sees the labels file's indices and the training file names' classes
    val_set, calib_set = imagenet_folder(val), imagenet_folder(calib)
    assert sorted(val_set.targets) == sorted(k for _, k in VAL)
    assert {Path(p).name: k for p, k in val_set.samples} == dict(VAL)
    assert sorted(calib_set.targets) == [0, 5]


def test_rerun_does_nothing_and_other_output_is_refused(shared, tmp_path):
    val, _ = layout_imagenet_samples(shared, tmp_path / "out")
    image = val / WNIDS[3] / VAL[0][0]
    stamp = image.stat().st_mtime_ns
    layout_imagenet_samples(shared, tmp_path / "out")
    assert image.stat().st_mtime_ns == stamp
    foreign = tmp_path / "foreign"
    (foreign / "imagenet-val" / WNIDS[0]).mkdir(parents=True)
    with pytest.raises(BALFError, match="overwrite"):
        layout_imagenet_samples(shared, foreign)
    val, _ = layout_imagenet_samples(shared, foreign, overwrite=True)
    assert (val / WNIDS[999] / VAL[1][0]).is_file()


@pytest.mark.parametrize(
    "breakage, error, match",
    [
        ("no-folder", DatasetNotFoundError, "get_samples.sh"),
        ("no-labels", DatasetNotFoundError, "val1300_labels.txt"),
        ("bad-index", BALFError, r"index in \[0, 1000\)"),
        ("missing-image", BALFError, "missing"),
        ("unknown-wnid", BALFError, "WordNet id"),
        ("unsorted-synsets", BALFError, "sorted"),
    ],
)
def test_bad_source_is_a_clear_error(shared, tmp_path, breakage, error, match):
    if breakage == "no-folder":
        shared = tmp_path / "nowhere"
    elif breakage == "no-labels":
        (shared / "val1300_labels.txt").unlink()
    elif breakage == "bad-index":
        (shared / "val1300_labels.txt").write_text("ILSVRC2012_val_00000347.JPEG, 1000\n")
    elif breakage == "missing-image":
        (shared / "val1300" / VAL[0][0]).unlink()
    elif breakage == "unknown-wnid":
        write_noise_jpeg(shared / "train1000" / "n99999999_unknown.JPEG", 7)
    elif breakage == "unsorted-synsets":
        lines = (shared / "synset_words.txt").read_text().splitlines()
        (shared / "synset_words.txt").write_text("\n".join(lines[::-1]) + "\n")
    with pytest.raises(error, match=match):
        layout_imagenet_samples(shared, tmp_path / "out")
    assert not (tmp_path / "out" / "imagenet-val.partial").exists()


def test_labels_file_parsing():
    path = SHARED / "val1300_labels.txt"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    pairs = read_val_labels(path)
    assert len(pairs) == 1300 and len({k for _, k in pairs}) == 725


def test_dataset_name_and_label(shared, tmp_path):
    layout_imagenet_samples(shared, tmp_path / "datasets" / "imagenet-samples")
    assert dataset_label("imagenet-samples") == SAMPLES_LABEL
    assert SAMPLES_LABEL == "ImageNet samples (1,300 val / 1,000 train images)"
    # --data-root datasets finds the nested folder; the folder itself works too
    assert samples_root(tmp_path / "datasets") == tmp_path / "datasets" / "imagenet-samples"
    nested = samples_root(tmp_path / "datasets" / "imagenet-samples")
    assert nested == tmp_path / "datasets" / "imagenet-samples"
    resnet18 = preprocessing_of("resnet18")  # the model's declared preprocessing
    train, test = dataset_info("imagenet-samples").splits(tmp_path / "datasets", resnet18)
    assert (len(train), len(test)) == (len(TRAIN), len(VAL))
    assert test[0][0].shape == (3, 224, 224)
    with pytest.raises(DatasetNotFoundError, match="get_samples.sh"):
        dataset_info("imagenet-samples").splits(tmp_path / "empty", resnet18)


def _env() -> dict[str, str]:
    paths = [str(REPO / "lib"), os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        "PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
    }


def test_shell_script_end_to_end(shared, tmp_path):
    script = REPO / "scripts" / "imagenet" / "get_samples.sh"
    out = tmp_path / "dest"
    done = subprocess.run(["bash", str(script), str(shared), str(out)], env=_env(),
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(list((out / "imagenet-val").rglob("*.JPEG"))) == len(VAL)
    assert len(list((out / "imagenet-calib").rglob("*.JPEG"))) == len(TRAIN)
    missing = subprocess.run(["bash", str(script), str(tmp_path / "nowhere"), str(out)],
                             env=_env(), capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 2
    last = missing.stderr.strip().splitlines()[-1]  # (torch may log a CUDA note first)
    assert last.startswith("get_samples.py: error: ImageNet samples folder not found")
    assert "Traceback" not in missing.stderr


def test_factorize_sweep_on_the_samples(shared, tmp_path):
    """The ImageNet sweep runs unchanged on the laid-out samples, under the samples' name."""
    root = tmp_path / "datasets"
    layout_imagenet_samples(shared, root / "imagenet-samples")
    factorize = experiment("factorize", "imagenet")
    args = tiny_sweep_args(root, tmp_path, calib_size=2)
    args[args.index("--eval-size") + 1] = "3"
    factorize.main(["--dataset", "imagenet-samples", "--model", "mobilenet_v2", *args,
                    "--modes", "flops_auto", "--knobs", "0.9", "--workers", "0"])  # fmt: skip
    run = tmp_path / "results" / "imagenet-samples" / "mobilenet_v2" / "flops_auto"
    assert (run / "results.json").is_file()
    assert "--dataset imagenet-samples" in (run / "command.txt").read_text()
