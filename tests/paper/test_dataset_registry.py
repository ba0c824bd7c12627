"""The dataset registry: one entry per dataset, read by the sweeps and by the training script."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _fixtures import load_script
from PIL import Image
from torch.utils.data import TensorDataset

import balf
from balf_paper.data import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
from balf_paper.data.fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from balf_paper.data.registry import (
    DatasetInfo,
    dataset_info,
    register_dataset,
    registered_datasets,
)
from balf_paper.experiments.tasks.image.data import (
    corrupted_evaluation,
    experiment_data,
    experiment_model,
)


def test_builtin_datasets_and_their_constants():
    assert registered_datasets()[:4] == ("cifar10", "cifar10-jpeg", "fashion-mnist", "imagenet")
    for name in ("cifar10", "cifar10-jpeg"):
        info = dataset_info(name)
        assert (info.channels, info.num_classes, info.image_size) == (3, 10, 32)
        assert (info.mean, info.std, info.crop_padding) == (CIFAR10_MEAN, CIFAR10_STD, 4)
    fm = dataset_info("fashion-mnist")
    assert (fm.channels, fm.mean, fm.std) == (1, (FASHION_MNIST_MEAN,), (FASHION_MNIST_STD,))
    assert dataset_info("imagenet").public_weights and dataset_info("imagenet").tensors is None
    with pytest.raises(balf.BALFError, match="unknown dataset 'mnist'"):
        dataset_info("mnist")


def test_the_training_script_reads_the_registry():
    pretrain = load_script("cifar10/pretrain_resnet.py")
    assert pretrain.trainable_datasets() == ["cifar10", "cifar10-jpeg", "fashion-mnist"]


def _write_jpeg_release(root: Path, per_class: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in CIFAR10_CLASSES:
            folder = root / "cifar10-jpeg" / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=95)
    return root


def test_cifar10_jpeg_feeds_sweeps_and_training(tmp_path):
    root = _write_jpeg_release(tmp_path)
    data = experiment_data("cifar10-jpeg", root, "resnet20", calib_size=8, eval_size=6)
    image, label = data.calibration[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= label < 10
    assert len(data.calibration) == 8 and len(data.evaluation) == 6
    assert data.data_tag == "cifar10-jpeg-resnet20-calib8-seed0"
    tensors = dataset_info("cifar10-jpeg").tensors(root / "cifar10-jpeg")
    assert tensors["train"][0].shape == (20, 3, 32, 32) and tensors["train"][0].dtype == torch.uint8
    model, weights = experiment_model("cifar10-jpeg", "resnet20", pretrained=False)
    assert weights == "random-seed0" and model.fc.out_features == 10


def test_a_registered_dataset_is_an_experiment_dataset(tmp_path):
    def splits(root, model_name):
        x = torch.randn(12, 2, 8, 8)
        return TensorDataset(x, torch.arange(12) % 3), TensorDataset(x[:4], torch.arange(4) % 3)

    info = DatasetInfo("toy", 2, 3, 8, (0.0, 0.0), (1.0, 1.0), splits)
    register_dataset(info)
    try:
        data = experiment_data("toy", tmp_path, "resnet20", calib_size=5)
        assert len(data.calibration) == 5 and len(data.evaluation) == 4
        model, _ = experiment_model("toy", "resnet20", pretrained=False)
        assert model.conv1.in_channels == 2 and model.fc.out_features == 3
        with pytest.raises(balf.BALFError, match="no corrupted test sets for dataset 'toy'"):
            corrupted_evaluation("toy", tmp_path, "fog", 1)
    finally:
        from balf_paper.data import registry

        registry._REGISTRY.pop("toy")
