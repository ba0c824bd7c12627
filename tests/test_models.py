"""Model zoo: CIFAR ResNets, the ImageNet registry, eval transforms and checkpoint I/O."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

import balf_paper.models.imagenet as imagenet
from balf.errors import BALFError, WeightsNotFoundError
from balf_paper.models import (
    create_model,
    eval_transform,
    list_models,
    load_checkpoint,
    save_checkpoint,
)

IMAGENET_NAMES = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "vit_b_16",
    "deit_b_16",
]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- CIFAR ResNets
@pytest.mark.parametrize("in_channels,size", [(1, 28), (3, 32)], ids=["1ch-28px", "3ch-32px"])
@pytest.mark.parametrize("name", ["resnet20", "resnet56"])
def test_cifar_resnet_forward(name: str, in_channels: int, size: int) -> None:
    model = create_model(name, pretrained=False, in_channels=in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 10)


@pytest.mark.parametrize(
    "name,expected", [("resnet20", 0.27e6), ("resnet56", 0.85e6)], ids=["resnet20", "resnet56"]
)
def test_cifar_resnet_parameter_count(name: str, expected: float) -> None:
    assert _params(create_model(name, pretrained=False)) == pytest.approx(expected, rel=0.02)


def test_cifar_resnet_structure_and_classes() -> None:
    model = create_model("resnet20", pretrained=False, num_classes=7, in_channels=1)
    assert isinstance(model.conv1, nn.Conv2d) and model.conv1.in_channels == 1
    assert isinstance(model.bn1, nn.BatchNorm2d)
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == 7
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [3, 3, 3]
    assert isinstance(model.layer1[0].shortcut, nn.Identity)
    projection = model.layer2[0].shortcut
    assert isinstance(projection, nn.Sequential)
    assert isinstance(projection[0], nn.Conv2d) and projection[0].kernel_size == (1, 1)
    assert projection[0].stride == (2, 2) and isinstance(projection[1], nn.BatchNorm2d)
    block = model.layer3[1]
    for attr in ("conv1", "bn1", "conv2", "bn2", "shortcut"):
        assert hasattr(block, attr)


def test_cifar_resnet_pretrained_is_an_error() -> None:
    with pytest.raises(BALFError, match="load_checkpoint"):
        create_model("resnet20")


def test_unknown_model() -> None:
    with pytest.raises(BALFError, match="resnet20"):
        create_model("vgg16", pretrained=False)


def test_list_models() -> None:
    third_party = ["resnet20a", "resnet32a", "resnet44a", "resnet56a"]
    samples = ["mobilenet_v2_q8", "efficientnet_lite0"]  # real weights without a download
    assert list_models() == ["resnet20", "resnet56", *third_party, *IMAGENET_NAMES, *samples]


# ----------------------------------------------------------------------------- ImageNet registry
@pytest.mark.parametrize("name", IMAGENET_NAMES)
def test_imagenet_models_build_offline(name: str) -> None:
    model = create_model(name, pretrained=False)
    assert _params(model) > 1e6
    if name in ("resnet18", "mobilenet_v2"):
        with torch.no_grad():
            assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    if name in ("vit_b_16", "deit_b_16"):
        attention = [m for m in model.modules() if isinstance(m, imagenet.Attention)]
        assert len(attention) == 12 and not any(m.fused_attn for m in attention)


def test_imagenet_num_classes() -> None:
    assert create_model("resnet18", pretrained=False, num_classes=5).fc.out_features == 5
    with pytest.raises(BALFError, match="pretrained"):
        create_model("resnet18", pretrained=True, num_classes=5)


@pytest.mark.parametrize(
    "name,resize,interpolation,mean",
    [
        ("resnet50", 256, T.InterpolationMode.BILINEAR, (0.485, 0.456, 0.406)),
        ("mobilenet_v2", 256, T.InterpolationMode.BILINEAR, (0.485, 0.456, 0.406)),
        ("vit_b_16", 248, T.InterpolationMode.BICUBIC, (0.5, 0.5, 0.5)),
        ("deit_b_16", 248, T.InterpolationMode.BICUBIC, (0.485, 0.456, 0.406)),
    ],
)
def test_eval_transform(name: str, resize: int, interpolation, mean: tuple) -> None:
    tf = eval_transform(name)
    resize_t, crop_t, _, norm_t = tf.transforms
    assert resize_t.size == resize and resize_t.interpolation == interpolation
    assert tuple(crop_t.size) == (224, 224)
    assert tuple(norm_t.mean) == mean
    expected_std = (0.5,) * 3 if name == "vit_b_16" else (0.229, 0.224, 0.225)
    assert tuple(norm_t.std) == expected_std
    assert tf(Image.new("RGB", (300, 260))).shape == (3, 224, 224)


def test_eval_transform_cifar_models() -> None:
    tf = eval_transform("resnet20", dataset="fashion-mnist")
    assert tf(Image.new("L", (28, 28))).shape == (1, 28, 28)
    assert eval_transform("resnet56").transforms[-1].mean == (0.4914, 0.4822, 0.4465)


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty torch hub dir; every download attempt fails as it does without a network."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable (mocked)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr("timm.models._hub.download_url_to_file", no_network)
    monkeypatch.setattr("timm.models._hub.hf_hub_download", no_network)
    return tmp_path / "hub" / "checkpoints"


def test_torchvision_pretrained_offline_names_file(offline_hub: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        create_model("resnet18", pretrained=True)
    assert str(offline_hub / "resnet18-f37072fd.pth") in str(info.value)
    assert "mocked" in str(info.value)


def test_torchvision_pretrained_from_local_file(offline_hub: Path) -> None:
    reference = create_model("resnet18", pretrained=False)
    offline_hub.mkdir(parents=True)
    torch.save(reference.state_dict(), offline_hub / "resnet18-f37072fd.pth")
    model = create_model("resnet18", pretrained=True)
    torch.testing.assert_close(model.state_dict(), reference.state_dict())


def test_timm_pretrained_offline_names_file(offline_hub: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        create_model("vit_b_16", pretrained=True)
    message = str(info.value)
    assert str(offline_hub / "vit_base_patch16_224.augreg2_in21k_ft_in1k.safetensors") in message
    assert "pretrained_cfg_overlay" in message
    assert "mocked" in message  # the failure came from the (mocked) download, not elsewhere


def test_timm_pretrained_from_local_file(offline_hub: Path) -> None:
    from safetensors.torch import save_file

    reference = create_model("deit_b_16", pretrained=False)
    offline_hub.mkdir(parents=True)
    save_file(reference.state_dict(), offline_hub / "deit_base_patch16_224.fb_in1k.safetensors")
    model = create_model("deit_b_16", pretrained=True)
    torch.testing.assert_close(model.state_dict(), reference.state_dict())
    assert not any(m.fused_attn for m in model.modules() if isinstance(m, imagenet.Attention))


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = create_model("resnet20", pretrained=False, in_channels=1)
    with torch.no_grad():
        model.fc.bias.add_(1.0)
        model.bn1.running_mean.add_(0.5)
    path = save_checkpoint(
        model, tmp_path / "sub" / "model.pt", arch="resnet20", test_acc=0.93, tags=["a"]
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # a normal file, not mkstemp's 0600
    fresh = create_model("resnet20", pretrained=False, in_channels=1)
    meta = load_checkpoint(fresh, path)
    assert meta == {"arch": "resnet20", "test_acc": 0.93, "tags": ["a"]}
    torch.testing.assert_close(fresh.state_dict(), model.state_dict())


def test_checkpoint_metadata_is_made_plain(tmp_path: Path) -> None:
    import numpy as np

    model = create_model("resnet20", pretrained=False)
    path = save_checkpoint(
        model,
        tmp_path / "m.pt",
        torch_version=torch.__version__,  # a str subclass that weights_only loading rejects
        where=tmp_path,
        acc=np.float32(0.5),
        n=np.int64(3),
        mean=(0.1, 0.2),
    )
    meta = load_checkpoint(model, path)
    assert meta == {
        "torch_version": str(torch.__version__),
        "where": str(tmp_path),
        "acc": 0.5,
        "n": 3,
        "mean": [0.1, 0.2],
    }
    assert type(meta["torch_version"]) is str
    with pytest.raises(BALFError, match="plain data"):
        save_checkpoint(model, tmp_path / "bad.pt", thing=object())


def test_load_checkpoint_rejects_foreign_file(tmp_path: Path) -> None:
    model = create_model("resnet20", pretrained=False)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(BALFError, match="not a balf checkpoint"):
        load_checkpoint(model, tmp_path / "plain.pt")
