"""The ImageNet-C and ImageNet-V2 loaders on fixture files in the published layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _fixtures import write_flat_jpeg, write_imagenet_c, write_imagenet_v2
from torchvision import datasets

from balf.errors import BALFError, DatasetNotFoundError
from balf_paper.data.imagenet_shift import (
    IMAGENET_C_CORRUPTIONS,
    IMAGENET_C_GROUPS,
    imagenet_c,
    imagenet_c_group,
    imagenet_v2,
)

WNIDS = ["n01440764", "n01443537", "n01484850"]


def test_groups_cover_the_19_corruptions_of_the_release():
    assert list(IMAGENET_C_GROUPS) == ["noise", "blur", "weather", "digital", "extra"]
    assert len(IMAGENET_C_CORRUPTIONS) == len(set(IMAGENET_C_CORRUPTIONS)) == 19
    assert imagenet_c_group("fog") == "weather" and imagenet_c_group("spatter") == "extra"
    with pytest.raises(BALFError, match="unknown ImageNet-C corruption"):
        imagenet_c_group("rain")


def test_imagenet_c_set_has_wnid_classes_in_sorted_order(tmp_path):
    root = write_imagenet_c(tmp_path / "C", WNIDS[::-1], {"fog": [1, 3], "speckle_noise": [5]})
    fog3 = imagenet_c(root, "fog", 3)
    assert fog3.classes == sorted(WNIDS) and len(fog3) == 3
    image, label = fog3[0]
    assert image.size == (224, 224) and fog3.classes[label] == Path(fog3.samples[0][0]).parent.name
    assert len(imagenet_c(root, "speckle_noise", 5)) == 3  # "extra" group


@pytest.mark.parametrize(
    "args, error, match",
    [
        (("fog", 2), DatasetNotFoundError, "fog/2"),  # severity not extracted
        (("snow", 1), DatasetNotFoundError, "<corruption>/<severity>/<wnid>"),
        (("fog", 6), BALFError, "1..5"),
        (("rain", 1), BALFError, "unknown ImageNet-C corruption"),
    ],
    ids=["missing-severity", "missing-corruption", "bad-severity", "bad-corruption"],
)
def test_imagenet_c_errors_name_the_problem(tmp_path, args, error, match):
    root = write_imagenet_c(tmp_path / "C", WNIDS, {"fog": [1]})
    with pytest.raises(error, match=match):
        imagenet_c(root, *args)


def test_imagenet_v2_maps_class_folders_numerically(tmp_path):
    classes = [0, 2, 10, 999]
    parent = write_imagenet_v2(tmp_path, classes)
    v2 = imagenet_v2(parent)  # default variant: matched-frequency
    assert sorted(set(v2.targets)) == classes and len(v2) == 8
    for i in range(len(v2)):
        image, label = v2[i]
        assert abs(int(np.asarray(image)[12, 12, 0]) - label % 256) <= 3  # the folder's pixels
    # what a lexical ImageFolder would have done: folder "10" becomes class 1
    lexical = datasets.ImageFolder(str(parent / "imagenetv2-matched-frequency-format-val"))
    assert lexical.class_to_idx["10"] == 1
    # the folder itself works too, and the transform is applied
    direct = imagenet_v2(parent / "imagenetv2-matched-frequency-format-val", transform=np.asarray)
    assert direct[0][0].shape == (24, 24, 3)


def test_imagenet_v2_other_variants_and_errors(tmp_path):
    write_imagenet_v2(tmp_path, [5], variant="top-images")
    assert imagenet_v2(tmp_path, "top-images").targets == [5, 5]
    with pytest.raises(DatasetNotFoundError, match="imagenetv2-threshold0.7-format-val"):
        imagenet_v2(tmp_path, "threshold0.7")
    with pytest.raises(BALFError, match="unknown ImageNet-V2 variant"):
        imagenet_v2(tmp_path, "v3")
    bad = tmp_path / "imagenetv2-threshold0.7-format-val"
    write_flat_jpeg(bad / "n01440764" / "a.jpeg", 1)
    with pytest.raises(DatasetNotFoundError, match="n01440764"):
        imagenet_v2(bad)
    write_flat_jpeg(tmp_path / "x" / "imagenetv2-top-images-format-val" / "1000" / "a.jpeg", 1)
    with pytest.raises(DatasetNotFoundError, match="1000"):
        imagenet_v2(tmp_path / "x", "top-images")
