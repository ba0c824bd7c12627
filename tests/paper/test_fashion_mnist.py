"""Fashion-MNIST loading from IDX .gz files written in the real format by the test."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from balf.errors import DatasetNotFoundError
from balf_paper.data import fashion_mnist as fm

SIZES = {"train": 12, "test": 5}


def _write_real_idx(path: Path, array: np.ndarray) -> None:
    """IDX writer independent of the library: magic 0x0000_08_ndim, big-endian dims, bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    for split, (image_file, label_file) in fm.FASHION_MNIST_FILES.items():
        n = SIZES[split]
        _write_real_idx(root / image_file, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_real_idx(root / label_file, rng.integers(0, 10, (n,), dtype=np.uint8))
    return root


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No default location has the files and torchvision's download fails."""
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setattr(fm, "LOCAL_DIR", tmp_path / "local")
    monkeypatch.chdir(tmp_path)

    class FailingDownload:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("no network")

    monkeypatch.setattr("torchvision.datasets.FashionMNIST", FailingDownload)
    return tmp_path


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_from_root(idx_dir: Path, split: str) -> None:
    images, labels = fm.load_fashion_mnist(split, root=idx_dir)
    assert images.shape == (SIZES[split], 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (SIZES[split],) and labels.dtype == torch.int64
    with gzip.open(idx_dir / fm.FASHION_MNIST_FILES[split][0]) as f:
        raw = np.frombuffer(f.read()[16:], dtype=np.uint8)
    assert torch.equal(images.flatten(), torch.from_numpy(raw.copy()))


def test_env_var_is_searched(idx_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fm.ENV_VAR, str(idx_dir))
    assert fm.find_fashion_mnist(download=False) == idx_dir


def test_write_read_idx_round_trip(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte.gz", "a-idx3-ubyte"):
        fm.write_idx(tmp_path / name, array)
        np.testing.assert_array_equal(fm.read_idx(tmp_path / name), array)


def test_corrupt_file_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x01\x02\x03\x04garbage")
    with pytest.raises(ValueError, match="not an IDX file"):
        fm.read_idx(bad)
    truncated = tmp_path / "short.gz"
    with gzip.open(truncated, "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="bytes"):
        fm.read_idx(truncated)


def test_dataset_items_are_normalised(idx_dir: Path) -> None:
    ds = fm.FashionMNIST("test", root=idx_dir)
    images, labels = fm.load_fashion_mnist("test", root=idx_dir)
    assert len(ds) == SIZES["test"]
    image, label = ds[3]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    expected = (images[3].float() / 255 - fm.FASHION_MNIST_MEAN) / fm.FASHION_MNIST_STD
    torch.testing.assert_close(image[0], expected)
    assert label == int(labels[3])
    flipped = fm.FashionMNIST("test", root=idx_dir, transform=lambda x: x.flip(-1))
    torch.testing.assert_close(flipped[3][0], image.flip(-1))


def test_unknown_split(idx_dir: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        fm.load_fashion_mnist("validation", root=idx_dir)  # type: ignore[arg-type]


def test_missing_files_raise_with_paths(nowhere: Path) -> None:
    missing = nowhere / "missing"
    with pytest.raises(DatasetNotFoundError) as info:
        fm.load_fashion_mnist("train", root=missing)
    message = str(info.value)
    assert str(missing) in message
    assert str(nowhere / "system") in message
    assert "train-images-idx3-ubyte.gz" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "download=True" in message


def test_torchvision_download_fallback(nowhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeDownload:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            raw = Path(root) / "FashionMNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            split = "train" if train else "test"
            image_file, label_file = fm.FASHION_MNIST_FILES[split]
            _write_real_idx(raw / image_file, np.zeros((2, 28, 28), dtype=np.uint8))
            _write_real_idx(raw / label_file, np.ones((2,), dtype=np.uint8))

    monkeypatch.setattr("torchvision.datasets.FashionMNIST", FakeDownload)
    images, labels = fm.load_fashion_mnist("test")
    assert images.shape == (2, 28, 28) and labels.tolist() == [1, 1]
