"""ImageNet folders (tiny ImageFolder fixtures) and the generic subset / loader helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset
from torchvision import transforms as T

from balf.errors import BALFError, DatasetNotFoundError
from balf_paper.data import (
    calibration_subset,
    evaluation_subset,
    imagenet_folder,
    make_loader,
    random_indices,
)

WNIDS = ["n01440764", "n01443537", "n02119789"]
PER_CLASS = 4


def _write_image(path: Path, value: int) -> None:
    Image.new("RGB", (8, 8), (value, value, value)).save(path, "JPEG")


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet-val"
    for c, wnid in enumerate(WNIDS):
        (root / wnid).mkdir(parents=True)
        for i in range(PER_CLASS):
            _write_image(root / wnid / f"{wnid}_{i}.JPEG", 40 * c + i)
    return root


def test_imagenet_folder_classes_are_sorted_wnids(image_folder):
    dataset = imagenet_folder(image_folder, T.ToTensor())
    assert dataset.classes == sorted(WNIDS)
    assert len(dataset) == len(WNIDS) * PER_CLASS
    image, label = dataset[PER_CLASS]  # first image of the second class
    assert image.shape == (3, 8, 8)
    assert label == 1


def test_imagenet_folder_keeps_empty_class_folders(image_folder):
    # a small calibration sample can miss a class; its (empty) folder keeps the indices aligned
    (image_folder / "n00000001").mkdir()
    dataset = imagenet_folder(image_folder)
    assert dataset.classes[0] == "n00000001"
    assert dataset.class_to_idx["n01440764"] == 1


@pytest.mark.parametrize("case", ["missing-root", "no-class-folders", "not-wnids", "no-images"])
def test_imagenet_folder_errors_name_the_path(tmp_path, case):
    root = tmp_path / "imagenet-calib"
    if case != "missing-root":
        root.mkdir()
    if case == "not-wnids":
        (root / "cats").mkdir()
        _write_image(root / "cats" / "a.JPEG", 0)
    if case == "no-images":
        (root / WNIDS[0]).mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        imagenet_folder(root)
    assert str(root) in str(info.value)
    assert "extract_" in str(info.value)


# --- subsets and loaders -----------------------------------------------------------------------


@pytest.fixture
def toy_dataset() -> TensorDataset:
    return TensorDataset(torch.arange(100).float().reshape(100, 1), torch.arange(100) % 10)


@pytest.mark.parametrize("seed", [0, 1, 123])
def test_calibration_subset_is_reproducible_per_seed(toy_dataset, seed):
    first = calibration_subset(toy_dataset, 16, seed=seed)
    second = calibration_subset(toy_dataset, 16, seed=seed)
    assert first.indices == second.indices
    assert len(set(first.indices)) == 16 and first.indices == sorted(first.indices)
    assert all(0 <= i < 100 for i in first.indices)


def test_calibration_subsets_differ_across_seeds(toy_dataset):
    draws = {tuple(calibration_subset(toy_dataset, 16, seed=s).indices) for s in range(5)}
    assert len(draws) == 5


def test_calibration_subset_of_imagefolder_returns_its_items(image_folder):
    dataset = imagenet_folder(image_folder, T.ToTensor())
    subset = calibration_subset(dataset, 5, seed=3)
    assert len(subset) == 5
    image, label = subset[0]
    assert torch.equal(image, dataset[subset.indices[0]][0])
    assert label == dataset.targets[subset.indices[0]]


def test_smaller_subsets_are_nested_in_larger_ones(toy_dataset):
    small, large = (set(random_indices(100, n, seed=7)) for n in (10, 40))
    assert small <= large


@pytest.mark.parametrize("size", [0, 101], ids=["empty", "larger-than-dataset"])
def test_calibration_subset_rejects_bad_sizes(toy_dataset, size):
    with pytest.raises(BALFError, match="between 1 and"):
        calibration_subset(toy_dataset, size)


@pytest.mark.parametrize(("size", "expected"), [(None, 100), (1000, 100), (30, 30)])
def test_evaluation_subset_sizes(toy_dataset, size, expected):
    subset = evaluation_subset(toy_dataset, size, seed=0)
    assert len(subset) == expected
    if size is None:
        assert subset.indices == list(range(100))


def test_make_loader_batches_in_order_unless_shuffled(toy_dataset):
    inputs = torch.cat([x for x, _ in make_loader(toy_dataset, batch_size=32)])
    assert torch.equal(inputs.squeeze(1), torch.arange(100).float())
    shuffled = [torch.cat([x for x, _ in make_loader(toy_dataset, 32, shuffle=True, seed=5)])]
    shuffled += [torch.cat([x for x, _ in make_loader(toy_dataset, 32, shuffle=True, seed=5)])]
    assert torch.equal(shuffled[0], shuffled[1])
    assert not torch.equal(shuffled[0], inputs)


@pytest.mark.parametrize(("batch_size", "workers"), [(0, 0), (8, -1)], ids=["batch0", "workers-1"])
def test_make_loader_rejects_bad_arguments(toy_dataset, batch_size, workers):
    with pytest.raises(BALFError):
        make_loader(toy_dataset, batch_size, workers)
