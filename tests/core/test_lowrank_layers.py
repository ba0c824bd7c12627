"""A factorized layer answers what model code asks of the dense layer it replaced.

Model code reads attributes of the layers it built (T5 casts its input to
``self.wo.weight.dtype`` in every forward): ``weight`` is the dense product of the factors in
the dense layer's layout (so the functional call on it equals the layer), ``bias``, ``dtype``,
``device`` and the shape attributes are those of the dense layer; ``weight`` is read-only.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import balf

LINEAR = {"in_features": 12, "out_features": 20}
CONVS = {
    "conv2d": (nn.Conv2d(6, 10, 3, stride=2, padding=1, dilation=1, groups=2), (2, 6, 9, 9)),
    "conv2d-dilated": (nn.Conv2d(4, 8, (3, 1), padding="same", dilation=2), (2, 4, 7, 7)),
    "conv1d": (nn.Conv1d(6, 9, 5, stride=2, groups=3, bias=False), (2, 6, 16)),
}


def _small(dense: nn.Module, x: torch.Tensor, ratio: float = 0.5) -> nn.Module:
    """``dense`` factorized at ``ratio`` of its full rank (activation-aware)."""
    stats = balf.collect_statistics(dense, x, progress=False)
    decomposition = balf.decompose_layer(dense, stats.layers[""])
    rank = max(1, round(ratio * decomposition.max_rank))
    return balf.factorize_layer(dense, decomposition, rank)


def test_a_low_rank_linear_answers_as_nn_linear():
    dense = nn.Linear(**LINEAR).double()
    x = torch.randn(64, LINEAR["in_features"], dtype=torch.float64)
    small = _small(dense, x)
    assert small.weight.shape == dense.weight.shape and small.weight.dtype == torch.float64
    assert (small.in_features, small.out_features) == (dense.in_features, dense.out_features)
    assert small.bias is small.second.bias and small.dtype == torch.float64
    assert small.device == dense.weight.device
    torch.testing.assert_close(F.linear(x, small.weight, small.bias), small(x))


@pytest.mark.parametrize("case", list(CONVS), ids=list(CONVS))
def test_a_low_rank_conv_answers_as_the_dense_conv(case):
    dense, shape = CONVS[case]
    dense = dense.double()
    x = torch.randn(*shape, dtype=torch.float64)
    small = _small(dense, x)
    assert small.weight.shape == dense.weight.shape
    assert (small.bias is None) == (dense.bias is None) and small.padding_mode == "zeros"
    conv = F.conv2d if isinstance(dense, nn.Conv2d) else F.conv1d
    padding = small.padding if isinstance(small.padding, str) else small.padding
    again = conv(x, small.weight, small.bias, small.stride, padding, small.dilation, dense.groups)
    torch.testing.assert_close(again, small(x))


def test_at_full_rank_the_weight_is_the_dense_weight():
    dense = nn.Linear(8, 6).double()
    small = _small(dense, torch.randn(64, 8, dtype=torch.float64), ratio=1.0)
    assert small.rank == 6
    torch.testing.assert_close(small.weight, dense.weight)


def test_the_weight_is_read_only_and_follows_the_factors():
    """Writing to the view changes nothing; changing a factor changes the next read."""
    small = _small(nn.Linear(8, 6), torch.randn(64, 8))
    before = small.weight
    assert not before.requires_grad
    small.weight.zero_()
    torch.testing.assert_close(small.weight, before)
    with torch.no_grad():
        small.first.weight.mul_(2)
    torch.testing.assert_close(small.weight, 2 * before)
    assert "weight" not in small.state_dict() and "second.weight" in small.state_dict()


def test_a_layer_compressed_twice_still_answers():
    dense = nn.Linear(16, 12).double()
    x = torch.randn(64, 16, dtype=torch.float64)
    once = _small(dense, x, ratio=0.9)
    layer = once
    layer.second = _small(once.second, once.first(x))  # the second factor factorized again
    assert isinstance(layer.second, balf.LowRankLinear)
    torch.testing.assert_close(F.linear(x, layer.weight, layer.bias), layer(x))


def test_a_low_rank_hf_conv1d_answers_as_conv1d():
    pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    dense = Conv1D(20, 12).double()  # nf=20 outputs, nx=12 inputs; weight (nx, nf)
    nn.init.normal_(dense.bias)
    x = torch.randn(64, 12, dtype=torch.float64)
    small = _small(dense, x)
    assert (small.nx, small.nf) == (12, 20) and small.weight.shape == dense.weight.shape
    torch.testing.assert_close(torch.addmm(small.bias, x, small.weight), small(x))

