"""Conv subclasses that pad in their own forward: handled exactly or kept dense.

TensorFlow ports (timm's ``Conv2dSame``, EfficientNet-PyTorch's ``Conv2dStaticSamePadding``)
subclass ``nn.Conv2d`` with ``padding=0`` and pad inside ``forward``. balf used to factorize them
as plain convs, dropping the padding (EfficientNet-Lite0's stem gave 111×111 maps, not 112×112).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import balf


class PadInForward(nn.Conv2d):
    """Pads its input by one on the right and bottom (as TF "SAME" at stride 2), unregistered."""

    def forward(self, x):
        return super().forward(F.pad(x, (0, 1, 0, 1)))


class DeclaredPad(nn.Conv2d):
    """The same layer, declared to balf with a fixed padding rule."""

    def forward(self, x):
        return super().forward(F.pad(x, (0, 1, 0, 1)))


class ClaimedPlain(nn.Conv2d):
    """The same layer again, wrongly registered as a plain conv (the shape check must catch it)."""

    def forward(self, x):
        return super().forward(F.pad(x, (0, 1, 0, 1)))


def _net(first: nn.Module) -> nn.Sequential:
    return nn.Sequential(
        first,
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def _layer_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes = {}

    def hook(name):
        def record(module, args, output):
            shapes.setdefault(name, tuple(output.shape))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_children()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return shapes


def test_unknown_conv_that_pads_in_forward_is_kept_dense_with_the_reason():
    model = _net(PadInForward(3, 16, 3, stride=2)).eval()
    x = torch.randn(16, 3, 16, 16)
    small, report = balf.compress(model, x, balf.BALFConfig(0.5), progress=False)
    assert "0" in report.skipped and "overrides forward" in report.skipped["0"]
    assert "register_padded_conv" in report.skipped["0"]
    assert type(small[0]) is PadInForward  # untouched
    assert _layer_outputs(small, x) == _layer_outputs(model, x)


def test_a_layer_that_only_wraps_its_base_forward_is_kept_dense_too():
    class Logged(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2.0  # anything a subclass does is unknown to balf

    model = nn.Sequential(Logged(16, 16), nn.ReLU(), nn.Linear(16, 4))
    _, report = balf.compress(model, torch.randn(64, 16), balf.BALFConfig(0.5), progress=False)
    assert "0" in report.skipped and "Logged overrides forward of Linear" in report.skipped["0"]


@pytest.mark.parametrize("side", ["input", "output"])
def test_declared_padded_conv_is_factorized_exactly_at_full_rank(side):
    balf.register_padded_conv(DeclaredPad, lambda m: [0, 1, 0, 1])
    layer = DeclaredPad(6, 8, 3, stride=2).double()
    x = torch.randn(5, 6, 11, 13, dtype=torch.float64)
    stats = balf.collect_statistics(layer, x, side=side, progress=False)
    dec = balf.decompose_layer(layer, stats.layers[""])
    small = balf.factorize_layer(layer, dec, dec.max_rank)
    assert type(small).__name__ == "PaddedLowRankConv2d"
    with torch.no_grad():
        assert torch.allclose(small(x), layer(x), atol=1e-10)


def test_declared_padded_conv_in_a_model_keeps_every_shape_and_round_trips(tmp_path):
    balf.register_padded_conv(DeclaredPad, lambda m: [0, 1, 0, 1])
    model = _net(DeclaredPad(3, 16, 3, stride=2)).eval()
    x = torch.randn(32, 3, 16, 16)
    small, report = balf.compress(model, x, balf.BALFConfig(0.6), progress=False)
    assert "0" not in report.skipped
    assert _layer_outputs(small, x) == _layer_outputs(model, x)
    balf.save(small, tmp_path / "m.safetensors")
    again = balf.load(tmp_path / "m.safetensors", _net(DeclaredPad(3, 16, 3, stride=2)))
    with torch.no_grad():
        assert torch.equal(again(x), small(x))


def test_shape_check_refuses_a_replacement_with_another_output_shape():
    from balf.layers.conv2d import Conv2dKind

    balf.register_layer_kind(Conv2dKind().for_type(ClaimedPlain))  # wrong: it pads in forward
    model = _net(ClaimedPlain(3, 16, 3, stride=2)).eval()
    with pytest.raises(
        balf.BALFError, match=r"layer '0'.*outputs shape \(1, 16, 7, 7\).*\(1, 16, 8, 8\)"
    ):
        balf.compress(model, torch.randn(16, 3, 16, 16), balf.RankRatioConfig(0.3), progress=False)


class PadsLeftTop(nn.Conv2d):
    """Pads by one on the left and top; registered below with the padding in the wrong order."""

    def forward(self, x):
        return super().forward(F.pad(x, (1, 0, 1, 0)))


@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_a_padding_rule_in_the_wrong_order_is_caught_by_the_values(inplace):
    """[right, left, bottom, top] instead of [left, right, top, bottom]: the shapes agree, so the
    shape check passed and the layer was installed with a relative error of 0.8; the values on
    the first calibration sample catch it, before anything is installed."""
    balf.register_padded_conv(PadsLeftTop, lambda m: [0, 1, 0, 1])
    model = _net(PadsLeftTop(3, 16, 3, stride=2)).eval()
    first = model[0]
    with pytest.raises(balf.BALFError, match=r"layer '0' \(PadsLeftTop\).*relative error"):
        balf.compress(
            model, torch.randn(16, 3, 16, 16), balf.RankRatioConfig(0.3), progress=False,
            inplace=inplace,
        )  # fmt: skip
    assert model[0] is first and isinstance(model[2], nn.Conv2d)  # nothing was installed


timm_conv2d_same = pytest.importorskip("timm.layers.conv2d_same")


@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2)], ids=["s1", "s2", "d2"])
@pytest.mark.parametrize("side", ["input", "output"])
def test_timm_conv2d_same_is_factorized_exactly(stride, dilation, side):
    layer = timm_conv2d_same.Conv2dSame(4, 6, 3, stride=stride, dilation=dilation).double()
    x = torch.randn(4, 4, 10, 9, dtype=torch.float64)
    stats = balf.collect_statistics(layer, x, side=side, progress=False)
    dec = balf.decompose_layer(layer, stats.layers[""])
    small = balf.factorize_layer(layer, dec, dec.max_rank)
    with torch.no_grad():
        assert torch.allclose(small(x), layer(x), atol=1e-10)
        other = torch.randn(2, 4, 13, 12, dtype=torch.float64)  # "SAME" follows the input size
        assert torch.allclose(small(other), layer(other), atol=1e-10)


def test_timm_tf_model_keeps_every_layer_shape_and_round_trips(tmp_path):
    same = timm_conv2d_same.Conv2dSame
    model = _net(same(3, 16, 3, stride=2)).eval()
    x = torch.randn(32, 3, 16, 16)
    small, report = balf.compress(model, x, balf.BALFConfig(0.6), progress=False)
    assert report.layers["0"].factorized or "0" not in report.skipped
    assert _layer_outputs(small, x) == _layer_outputs(model, x)
    balf.save(small, tmp_path / "m.safetensors")
    again = balf.load(tmp_path / "m.safetensors", _net(same(3, 16, 3, stride=2)))
    with torch.no_grad():
        assert torch.equal(again(x), small(x))


def test_efficientnet_lite0_keeps_every_layer_shape():
    efficientnet = pytest.importorskip("efficientnet_lite_pytorch")
    model = efficientnet.EfficientNet.from_name("efficientnet-lite0").eval()
    x = torch.randn(4, 3, 64, 64)
    small, report = balf.compress(model, x, balf.RankRatioConfig(0.3), progress=False)
    assert not any("overrides" in r for r in report.skipped.values())
    assert report.layers["_conv_stem"].factorized  # 3×3 stride 2, padded (0, 1, 0, 1)
    dense, ours = {}, {}

    def hook(name, out):
        def record(module, args, y):
            out.setdefault(name, tuple(y.shape))

        return record

    for net, out in ((model, dense), (small, ours)):
        hooks = [
            m.register_forward_hook(hook(n, out))
            for n, m in net.named_modules()
            if n in report.layers
        ]
        with torch.no_grad():
            net(x[:1])
        for h in hooks:
            h.remove()
    assert ours == dense


def test_timm_linear_which_only_adds_a_torchscript_cast_is_factorized_as_nn_linear():
    timm_linear = pytest.importorskip("timm.layers.linear")
    model = nn.Sequential(timm_linear.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.randn(64, 32)
    small, report = balf.compress(model, x, balf.RankRatioConfig(0.25), progress=False)
    assert "0" not in report.skipped and report.layers["0"].factorized


def test_timm_models_lose_no_layer_to_the_override_check():
    timm = pytest.importorskip("timm")
    from balf.layers.selection import resolve_layers

    for name in ("tf_efficientnet_b0", "mobilenetv3_small_100", "deit_tiny_patch16_224"):
        _, skipped = resolve_layers(timm.create_model(name, pretrained=False))
        assert not [n for n, r in skipped.items() if "overrides" in r], name
