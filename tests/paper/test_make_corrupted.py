"""scripts/fashion_mnist/make_corrupted.py on a 6-image Fashion-MNIST test set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _fixtures import load_script, write_fashion_mnist

from balf.errors import BALFError
from balf_paper.data import CIFAR10C, random_indices
from balf_paper.data.fashion_mnist import read_idx
from balf_paper.experiments.tasks.image.data import corrupted_evaluation
from balf_paper.models import eval_transform

pytest.importorskip("imagecorruptions")

TEST_IMAGES = 6
# np.random-driven noise, per-call seeded impulse noise, and frost (a photo overlay, random crop)
CORRUPTIONS = ["gaussian_noise", "impulse_noise", "frost"]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_fashion_mnist(tmp_path / "fashion-mnist", train=10, test=TEST_IMAGES)


@pytest.fixture
def script():
    return load_script("fashion_mnist/make_corrupted.py")


def _run(script, source: Path, out: Path, *extra: str, corruptions=CORRUPTIONS) -> dict:
    argv = ["--data-root", str(source), "--out", str(out), "--no-progress"]
    return script.main([*argv, "--corruptions", *corruptions, *extra])


def _clean(source: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(source / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(source / "t10k-labels-idx1-ubyte.gz")
    return images, labels.astype(np.int64)


def test_writes_the_cifar10c_layout(script, source, tmp_path):
    out = tmp_path / "fashion-mnist-c"
    manifest = _run(script, source, out)
    clean, labels = _clean(source)
    stored = np.load(out / "labels.npy")
    assert stored.dtype == np.int64 and np.array_equal(stored, np.tile(labels, 5))
    for corruption in CORRUPTIONS:
        images = np.load(out / f"{corruption}.npy")
        assert images.shape == (5 * TEST_IMAGES, 28, 28) and images.dtype == np.uint8
        blocks = images.reshape(5, TEST_IMAGES, 28, 28)
        for s in range(5):
            assert not np.array_equal(blocks[s], clean), (corruption, s + 1)
            for t in range(s):
                assert not np.array_equal(blocks[s], blocks[t]), (corruption, t + 1, s + 1)
    assert sorted(manifest["corruptions"]) == sorted(CORRUPTIONS)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_stronger_noise_moves_pixels_further(script, source, tmp_path):
    out = tmp_path / "c"
    _run(script, source, out, corruptions=["gaussian_noise"])
    clean, _ = _clean(source)
    blocks = np.load(out / "gaussian_noise.npy").reshape(5, TEST_IMAGES, 28, 28).astype(float)
    errors = [np.abs(block - clean).mean() for block in blocks]
    assert errors == sorted(errors)


def test_same_seed_same_output_other_seed_other_output(script, source, tmp_path):
    _run(script, source, tmp_path / "a")
    np.random.seed(12345)  # the global state before a run must not matter
    _run(script, source, tmp_path / "b")
    _run(script, source, tmp_path / "c", "--seed", "1")
    for corruption in CORRUPTIONS:
        a, b, c = (np.load(tmp_path / d / f"{corruption}.npy") for d in "abc")
        assert np.array_equal(a, b), corruption
        assert not np.array_equal(a, c), corruption


def test_subset_is_a_seeded_fixed_selection(script, source, tmp_path):
    out = tmp_path / "c"
    _run(script, source, out, "--subset", "4", corruptions=["gaussian_noise"])
    _, labels = _clean(source)
    chosen = random_indices(TEST_IMAGES, 4, seed=0)
    assert np.array_equal(np.load(out / "labels.npy"), np.tile(labels[chosen], 5))
    assert np.load(out / "gaussian_noise.npy").shape == (20, 28, 28)


def test_loadable_with_a_grayscale_transform(script, source, tmp_path):
    out = tmp_path / "c"
    _run(script, source, out, corruptions=["frost"])
    _, labels = _clean(source)
    dataset = CIFAR10C(
        out, "frost", 3, transform=eval_transform("resnet20", dataset="fashion-mnist")
    )
    assert len(dataset) == TEST_IMAGES
    image, label = dataset[2]
    assert image.shape == (1, 28, 28) and label == labels[2]
    subset = corrupted_evaluation("fashion-mnist", out, "frost", 5, eval_size=3)
    assert len(subset) == 3 and subset[0][0].shape == (1, 28, 28)


def test_rerun_skips_finished_corruptions(script, source, tmp_path, monkeypatch):
    out = tmp_path / "c"
    _run(script, source, out, corruptions=["gaussian_noise"])
    first = (out / "gaussian_noise.npy").read_bytes()
    computed = []
    corrupt_images = script.corrupt_images

    def counting(images, corruption, *args, **kwargs):
        computed.append(corruption)
        return corrupt_images(images, corruption, *args, **kwargs)

    import balf_paper.data.corruptions

    monkeypatch.setattr(balf_paper.data.corruptions, "corrupt_images", counting)
    manifest = _run(script, source, out, corruptions=["gaussian_noise", "impulse_noise"])
    assert computed == ["impulse_noise"] * 5  # one call per severity, none for the finished one
    assert (out / "gaussian_noise.npy").read_bytes() == first
    assert sorted(manifest["corruptions"]) == ["gaussian_noise", "impulse_noise"]


def test_other_settings_into_the_same_folder_are_refused(script, source, tmp_path):
    out = tmp_path / "c"
    _run(script, source, out, corruptions=["impulse_noise"])
    with pytest.raises(BALFError, match="--overwrite"):
        _run(script, source, out, "--seed", "3", corruptions=["impulse_noise"])
    manifest = _run(script, source, out, "--seed", "3", "--overwrite", corruptions=["contrast"])
    assert manifest["settings"]["seed"] == 3
    assert sorted(p.name for p in out.glob("*.npy")) == ["contrast.npy", "labels.npy"]
