"""scripts/cifar10/pretrain_resnet.py end to end on tiny Fashion-MNIST fixture files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from balf.errors import DatasetNotFoundError
from balf_paper.data.fashion_mnist import FASHION_MNIST_FILES, write_idx
from balf_paper.experiments import training
from balf_paper.models import create_model, load_checkpoint

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cifar10" / "pretrain_resnet.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("pretrain_resnet", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


pretrain = _load_script()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 train / 16 test random 28x28 images in the real IDX .gz format."""
    root = tmp_path_factory.mktemp("fashion-mnist")
    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("test", 16)):
        image_file, label_file = FASHION_MNIST_FILES[split]
        write_idx(root / image_file, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / label_file, rng.integers(0, 10, (n,), dtype=np.uint8))
    return root


def _argv(data_root: Path, out_dir: Path, *extra: str) -> list[str]:
    return [
        "--arch",
        "resnet20",
        "--dataset",
        "fashion-mnist",
        "--data-root",
        str(data_root),
        "--out-dir",
        str(out_dir),
        "--batch-size",
        "16",
        "--eval-batch-size",
        "8",
        "--schedule",
        "cosine",
        "--device",
        "cpu",
        *extra,
    ]


def _log(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]


def test_trains_then_resumes_with_more_epochs(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert pretrain.main(_argv(data_root, out, "--epochs", "2")) == 0
    for name in ("last.pt", "model.pt", "train_log.jsonl", "command.txt", "config.yaml"):
        assert (out / name).is_file(), name
    first = _log(out)
    assert [r["epoch"] for r in first] == [1, 2]
    assert set(first[0]) == {
        "epoch",
        "lr",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "seconds",
    }
    model = create_model("resnet20", pretrained=False, in_channels=1)
    meta = load_checkpoint(model, out / "model.pt")
    assert meta["arch"] == "resnet20" and meta["dataset"] == "fashion-mnist"
    assert meta["epochs"] == 2 and meta["test_acc"] == first[-1]["test_acc"]
    command = (out / "command.txt").read_text()
    assert "--epochs 2" in command and "git_commit:" in command and "torch:" in command

    assert pretrain.main(_argv(data_root, out, "--epochs", "3")) == 0
    second = _log(out)
    assert second[:2] == first  # earlier epochs kept, not retrained
    assert [r["epoch"] for r in second] == [1, 2, 3]
    assert "resume after epoch 2" in (out / "command.txt").read_text()
    assert load_checkpoint(model, out / "model.pt")["epochs"] == 3


def test_interrupted_run_matches_uninterrupted(data_root: Path, tmp_path: Path) -> None:
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    pretrain.main(_argv(data_root, straight, "--epochs", "2"))
    pretrain.main(_argv(data_root, pieces, "--epochs", "2", "--max-epochs-this-run", "1"))
    assert [r["epoch"] for r in _log(pieces)] == [1]
    assert not (pieces / "model.pt").exists()
    pretrain.main(_argv(data_root, pieces, "--epochs", "2", "--max-epochs-this-run", "1"))
    a = torch.load(straight / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(pieces / "model.pt", weights_only=True)["state_dict"]
    torch.testing.assert_close(a, b)


def test_augment_is_crop_and_flip() -> None:
    images = torch.arange(4 * 2 * 5 * 5, dtype=torch.uint8).view(4, 2, 5, 5)
    generator = torch.Generator().manual_seed(0)
    out = training.augment(images, 0, generator)
    for x, y in zip(images, out, strict=True):
        assert torch.equal(y, x) or torch.equal(y, x.flip(-1))
    padded = training.augment(images, 2, generator)
    assert padded.shape == images.shape and padded.dtype == torch.uint8


def test_lr_schedules() -> None:
    args = pretrain.parse_args(["--epochs", "10", "--schedule", "cosine"])
    assert pretrain.lr_factor(0, args) == 1.0 and pretrain.lr_factor(5, args) == pytest.approx(0.5)
    args = pretrain.parse_args(["--epochs", "200"])  # paper defaults from the YAML config
    assert (args.schedule, args.milestones, args.lr, args.weight_decay) == (
        "step",
        [100, 150],
        0.1,
        1e-4,
    )
    assert [pretrain.lr_factor(e, args) for e in (99, 100, 150)] == pytest.approx([1.0, 0.1, 0.01])


def test_missing_cifar10_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        pretrain.load_dataset("cifar10", str(tmp_path))
