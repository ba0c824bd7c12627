"""CIFAR-10 and CIFAR-10-C loaders on tiny files written in the real on-disk layouts."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from _fixtures import md5_of, write_cifar10_batch
from torchvision import datasets
from torchvision import transforms as T

from balf.errors import BALFError, DatasetNotFoundError
from balf_paper.data import CIFAR10_MEAN, CIFAR10_STD, CIFAR10C, CORRUPTIONS, cifar10

TRAIN_PER_BATCH = 4  # 5 batches -> 20 training images
TEST_IMAGES = 6
BLOCK = 20  # CIFAR-10-C fixture: 20 test images x 5 severities


@pytest.fixture
def cifar_root(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, list[int]]]]:
    """Tiny CIFAR-10 in torchvision's layout; returns (root, {split: (images HWC, labels)})."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    train_images, train_labels = [], []
    for i in range(1, 6):
        images = rng.integers(0, 256, (TRAIN_PER_BATCH, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, TRAIN_PER_BATCH).tolist()
        write_cifar10_batch(folder / f"data_batch_{i}", images, labels)
        train_images.append(images)
        train_labels += labels
    test_images = rng.integers(0, 256, (TEST_IMAGES, 32, 32, 3), dtype=np.uint8)
    test_labels = rng.integers(0, 10, TEST_IMAGES).tolist()
    write_cifar10_batch(folder / "test_batch", test_images, test_labels)
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer"] + ["x"] * 5}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    splits = {"train": (np.concatenate(train_images), train_labels)}
    splits["test"] = (test_images, test_labels)
    return tmp_path, splits


@pytest.fixture
def accept_fixture_checksums(cifar_root, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torchvision's integrity check accept the fixture files.

    ``torchvision.datasets.CIFAR10._check_integrity`` (and ``_load_meta``) compare the md5 of
    every file with sums hard-coded on the class (``train_list``, ``test_list``, ``meta``) for the
    official files. The fixture's files differ, so for this test only the class attributes are
    replaced by the md5 sums of the fixture files; the check itself still runs unchanged.
    """
    root, _ = cifar_root
    folder = root / "cifar-10-batches-py"
    train = [[f"data_batch_{i}", md5_of(folder / f"data_batch_{i}")] for i in range(1, 6)]
    monkeypatch.setattr(datasets.CIFAR10, "train_list", train)
    monkeypatch.setattr(
        datasets.CIFAR10, "test_list", [["test_batch", md5_of(folder / "test_batch")]]
    )
    meta_md5 = md5_of(folder / "batches.meta")
    meta = {"filename": "batches.meta", "key": "label_names", "md5": meta_md5}
    monkeypatch.setattr(datasets.CIFAR10, "meta", meta)


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_returns_written_pixels_and_labels(cifar_root, accept_fixture_checksums, split):
    root, splits = cifar_root
    images, labels = splits[split]
    dataset = cifar10(root, train=split == "train", transform=T.PILToTensor())
    assert len(dataset) == len(images)
    for i in (0, len(images) - 1):
        image, label = dataset[i]
        assert torch.equal(image, torch.from_numpy(images[i]).permute(2, 0, 1))
        assert label == labels[i]


def test_cifar10_default_test_transform_normalises(cifar_root, accept_fixture_checksums):
    root, splits = cifar_root
    image, _ = cifar10(root, train=False)[0]
    raw = torch.from_numpy(splits["test"][0][0]).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(CIFAR10_MEAN)[:, None, None], torch.tensor(CIFAR10_STD)[:, None, None]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    torch.testing.assert_close(image, (raw - mean) / std)


def test_cifar10_checksum_mismatch_is_reported(cifar_root):
    # Without the patched sums, torchvision's md5 check rejects the fixture files.
    root, _ = cifar_root
    with pytest.raises(DatasetNotFoundError, match="corrupted"):
        cifar10(root, train=False)


@pytest.mark.parametrize("missing", ["cifar-10-batches-py", "data_batch_3", "batches.meta"])
def test_cifar10_missing_files_name_the_path(cifar_root, missing):
    root, _ = cifar_root
    folder = root / "cifar-10-batches-py"
    if missing == folder.name:
        root = root / "elsewhere"
    else:
        (folder / missing).unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        cifar10(root, train=True)
    assert str(root / "cifar-10-batches-py") in str(info.value)
    assert "download=True" in str(info.value)


# --- CIFAR-10-C --------------------------------------------------------------------------------

IMAGE_SHAPES = {"HWC-rgb": (32, 32, 3), "HWC-gray": (28, 28, 1), "HW-gray": (28, 28)}


def _write_corrupted(root: Path, corruption: str, shape: tuple[int, ...], labels_len: int) -> None:
    """Image k of the file (severity k // BLOCK + 1, position k % BLOCK) is filled with value k."""
    root.mkdir(exist_ok=True)
    values = np.arange(5 * BLOCK, dtype=np.uint8)
    images = np.broadcast_to(values.reshape(-1, *[1] * len(shape)), (5 * BLOCK, *shape))
    np.save(root / f"{corruption}.npy", np.ascontiguousarray(images))
    labels = np.arange(BLOCK) % 10
    np.save(root / "labels.npy", np.tile(labels, labels_len // BLOCK).astype(np.int64))


def _raw(image) -> np.ndarray:
    return np.asarray(image)


@pytest.fixture
def cifar10c_root(tmp_path: Path) -> Path:
    _write_corrupted(tmp_path / "CIFAR-10-C", "fog", IMAGE_SHAPES["HWC-rgb"], 5 * BLOCK)
    return tmp_path / "CIFAR-10-C"


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5], ids=lambda s: f"severity{s}")
def test_cifar10c_severity_selects_its_block(cifar10c_root, severity):
    dataset = CIFAR10C(cifar10c_root, "fog", severity, transform=_raw)
    assert len(dataset) == BLOCK
    for i in (0, 7, BLOCK - 1):
        image, label = dataset[i]
        assert image.shape == (32, 32, 3)
        assert np.all(image == (severity - 1) * BLOCK + i)
        assert label == i % 10


@pytest.mark.parametrize("layout", list(IMAGE_SHAPES))
@pytest.mark.parametrize("labels_len", [5 * BLOCK, BLOCK], ids=["labels-5N", "labels-N"])
def test_cifar10c_reads_rgb_and_grayscale_layouts(tmp_path, layout, labels_len):
    shape = IMAGE_SHAPES[layout]
    _write_corrupted(tmp_path, "snow", shape, labels_len)
    dataset = CIFAR10C(tmp_path, "snow", 4, transform=T.ToTensor())
    image, label = dataset[3]
    channels = shape[2] if len(shape) == 3 else 1
    assert image.shape == (channels, shape[0], shape[1])
    torch.testing.assert_close(image, torch.full_like(image, (3 * BLOCK + 3) / 255))
    assert label == 3


def test_cifar10c_default_transform_is_normalised_chw_float(cifar10c_root):
    image, _ = CIFAR10C(cifar10c_root, "fog", 1)[5]
    expected = (5 / 255 - torch.tensor(CIFAR10_MEAN)) / torch.tensor(CIFAR10_STD)
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    torch.testing.assert_close(image[:, 0, 0], expected)


def test_cifar10c_indices_select_a_fixed_subset(cifar10c_root):
    dataset = CIFAR10C(cifar10c_root, "fog", 2, transform=_raw, indices=[4, 0, 19])
    assert len(dataset) == 3
    assert [int(dataset[i][0][0, 0, 0]) for i in range(3)] == [BLOCK + 4, BLOCK, BLOCK + 19]
    assert dataset.targets.tolist() == [4, 0, 9]


def test_cifar10c_pickles_without_the_image_data(cifar10c_root):
    dataset = CIFAR10C(cifar10c_root, "fog", 1, transform=_raw)
    dataset[0]  # opens the memory map
    restored = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < (cifar10c_root / "fog.npy").stat().st_size
    assert np.array_equal(restored[1][0], dataset[1][0])


def test_corruptions_are_the_15_benchmark_names():
    assert len(set(CORRUPTIONS)) == 15
    assert {"gaussian_noise", "glass_blur", "jpeg_compression"} <= set(CORRUPTIONS)


@pytest.mark.parametrize(
    ("corruption", "severity", "indices", "message"),
    [
        ("rain", 1, None, "unknown corruption 'rain'"),
        ("fog", 0, None, "severity"),
        ("fog", 6, None, "severity"),
        ("fog", 2.0, None, "severity"),
        ("fog", 1, [0, BLOCK], "indices"),
        ("fog", 1, [-1], "indices"),
    ],
    ids=["bad-corruption", "severity0", "severity6", "float-severity", "index-past-end", "neg-idx"],
)
def test_cifar10c_rejects_bad_arguments(cifar10c_root, corruption, severity, indices, message):
    with pytest.raises(BALFError, match=message):
        CIFAR10C(cifar10c_root, corruption, severity, indices=indices)


@pytest.mark.parametrize("missing", ["fog.npy", "labels.npy", "folder"])
def test_cifar10c_missing_files_name_the_path(cifar10c_root, missing):
    root = cifar10c_root
    if missing == "folder":
        root = root.parent / "nowhere"
    else:
        (root / missing).unlink()
    expected = root / ("fog.npy" if missing == "folder" else missing)
    with pytest.raises(DatasetNotFoundError, match="zenodo") as info:
        CIFAR10C(root, "fog", 1)
    assert str(expected) in str(info.value)


@pytest.mark.parametrize(
    ("images", "labels"),
    [
        (np.zeros((99, 32, 32, 3), np.uint8), np.zeros(99, np.int64)),
        (np.zeros((100, 32, 32, 3), np.float32), np.zeros(100, np.int64)),
        (np.zeros((100, 32, 32, 2), np.uint8), np.zeros(100, np.int64)),
        (np.zeros((100, 32, 32, 3), np.uint8), np.zeros(30, np.int64)),
    ],
    ids=["length-not-5N", "float-images", "two-channels", "labels-mismatch"],
)
def test_cifar10c_rejects_bad_shapes_naming_the_file(tmp_path, images, labels):
    np.save(tmp_path / "fog.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    with pytest.raises(BALFError) as info:
        CIFAR10C(tmp_path, "fog", 1)
    assert str(tmp_path) in str(info.value)
