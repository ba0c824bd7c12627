"""Compressed models deploy: torch.export, ONNX under onnxruntime, BatchNorm folding.

On a compressed CIFAR ResNet-20, torchvision ResNet-18 and tiny timm ViT: the exported program
and the ONNX file (run by onnxruntime, at another batch size than exported) give the PyTorch
outputs; folding BatchNorm into the convolutions keeps the outputs and leaves no BatchNorm.
The ONNX tests need the ``export`` extra (installed by ``scripts/install.sh``).
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

import balf
from balf.io.export import conv_bn_pairs, export_onnx, fold_batchnorm
from balf_paper.models import create_model

SHAPES = {"resnet20": (3, 32, 32), "resnet18": (3, 64, 64), "vit_tiny": (3, 32, 32)}


def _build(name: str) -> nn.Module:
    if name == "resnet20":
        return create_model("resnet20", pretrained=False)
    if name == "resnet18":
        return torchvision.models.resnet18(weights=None, num_classes=10)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=10)


@pytest.fixture(scope="module", params=list(SHAPES))
def compressed(request) -> tuple[str, nn.Module]:
    torch.manual_seed(0)
    name = request.param
    model = _build(name).eval()
    small, report = balf.compress(
        model, torch.randn(16, *SHAPES[name]), balf.BALFConfig(0.5), progress=False
    )
    assert any(lr.factorized for lr in report.layers.values())
    return name, small.eval()


def test_torch_export_matches(compressed):
    name, model = compressed
    x = torch.randn(2, *SHAPES[name])
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model(x), atol=1e-5, rtol=1e-5)


def test_onnx_runtime_matches(compressed, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    name, model = compressed
    path = export_onnx(model, torch.randn(2, *SHAPES[name]), tmp_path / f"{name}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, *SHAPES[name])  # another batch size than exported
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(torch.from_numpy(out), expected, atol=1e-4, rtol=1e-4)


def test_fold_batchnorm_keeps_outputs(compressed):
    name, model = compressed
    x = torch.randn(2, *SHAPES[name])
    folded = fold_batchnorm(model, x[:1])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4, rtol=1e-4)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == (name != "vit_tiny")


def test_fold_pairs_the_second_conv_of_a_lowrank_conv():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
    small, _ = balf.compress(model, torch.randn(8, 8, 6, 6), balf.BALFConfig(0.3), progress=False)
    assert isinstance(small[0], balf.LowRankConv2d)
    assert conv_bn_pairs(small, torch.randn(1, 8, 6, 6)) == [("0.second", "1")]


class _Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y  # the conv output has a second user: folding would be wrong


def test_fold_refuses_a_conv_output_used_twice():
    model = _Shared().eval()
    model.bn.running_mean.fill_(0.5)
    with pytest.raises(balf.BALFError, match="folding BatchNorm changed"):
        fold_batchnorm(model, torch.randn(1, 3, 6, 6))


def test_export_onnx_names_the_missing_extra(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "onnxscript":
            raise ImportError("no onnxscript", name="onnxscript")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(balf.BALFError, match=r"pip install -e \.\[export\]"):
        export_onnx(nn.Linear(2, 2), torch.randn(1, 2), tmp_path / "x.onnx")


def test_install_script_installs_the_export_extra():
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    extra = tomllib.loads((repo / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["export"]
    install = (repo / "scripts" / "install.sh").read_text()
    assert f"pip install -q {' '.join(extra)}" in install
