"""Calibration sees every sample exactly once, whatever the batching.

Statistics are sums over samples, so how the calibration set is cut into batches must not matter:
uneven batches, a trailing batch of one, one sample per batch, empty batches, tensors split by
``batch_size``, ``DataLoader`` tuples and bare generators all give the sample count, row counts and
Gram matrices of the whole set passed as one batch — on every statistics path (output Grams of
convs and token Linears, input Grams through im2col, 1×1 convs and Linears).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import balf

F64 = torch.float64
N = 11


class _Net(nn.Module):
    """Every statistics path: output side (convs, token Linear), input side (im2col conv,
    1×1 conv, token Linear), with a BatchNorm that must not see batch statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, dtype=F64)  # D=27 > K=8: output side
        self.bn = nn.BatchNorm2d(8, dtype=F64)
        self.conv2 = nn.Conv2d(8, 24, 1, dtype=F64)  # 1×1, D=8 < K=24: input side
        self.conv3 = nn.Conv2d(24, 30, 3, stride=2, dtype=F64)  # D=216 > K: output side
        self.conv4 = nn.Conv2d(30, 40, (1, 2), dtype=F64)  # D=60 > K=40: output side
        self.lin1 = nn.Linear(40, 64, dtype=F64)  # tokens, D < K: input side
        self.lin2 = nn.Linear(64, 5, dtype=F64)  # tokens, output side
        self.conv5 = nn.Conv2d(30, 70, 2, dtype=F64)  # D=120 > K=70 forced to input: im2col

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        x = self.conv3(torch.relu(self.conv2(x)))  # (B, 30, 2, 2)
        tokens = self.conv4(x).flatten(2).transpose(1, 2)  # (B, 2, 40)
        out = self.lin2(torch.relu(self.lin1(tokens))).mean(1)
        return out + self.conv5(x).mean((1, 2, 3))[:, None]


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = _Net()
    with torch.no_grad():  # non-trivial running statistics
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    return model.train()  # calibration must use eval mode regardless


def _data() -> torch.Tensor:
    return torch.randn(N, 3, 6, 6, dtype=F64, generator=torch.Generator().manual_seed(1))


# batching id -> (data factory, batch_size passed, non-empty batches seen)
BATCHINGS = {
    "uneven-with-trailing-one": (lambda x: list(x.split([4, 4, 2, 1])), N, 4),
    "one-per-batch": (lambda x: list(x.split(1)), N, N),
    "leading-one": (lambda x: list(x.split([1, 10])), N, 2),
    "empty-batches-between": (lambda x: [x[:0], x[:6], x[6:6], x[6:], x[:0]], N, 2),
    "tensor-batch-size-5": (lambda x: x, 5, 3),  # split by collect_statistics: 5, 5, 1
    "dataloader-tuples": (
        lambda x: DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=5),
        N,
        3,
    ),
    "generator-without-len": (lambda x: (b for b in x.split(3)), N, 4),
}

LAYERS = ["conv1", "conv2", "conv3", "conv4", "lin1", "lin2"]


def _collect(make_data, batch_size: int) -> balf.Statistics:
    """Statistics of every layer (``conv5`` forced to the input side), from fresh data."""
    x = _data()
    stats = balf.collect_statistics(
        _model(), make_data(x), LAYERS, batch_size=batch_size, progress=False
    )
    forced = balf.collect_statistics(
        _model(), make_data(x), ["conv5"], side="input", batch_size=batch_size, progress=False
    )
    stats.layers.update(forced.layers)
    return stats


@pytest.fixture(scope="module")
def reference() -> balf.Statistics:
    """All the data in one batch."""
    return _collect(lambda x: [x], N)


def test_reference_covers_every_statistics_path(reference):
    sides = {name: st.side for name, st in reference.layers.items()}
    assert sides == {
        "conv1": "output",
        "conv2": "input",
        "conv3": "output",
        "conv4": "output",
        "lin1": "input",
        "lin2": "output",
        "conv5": "input",
    }


def test_rows_count_every_output_vector_of_every_sample(reference):
    assert reference.num_samples == N
    for name, st in reference.layers.items():
        shape = st.output_shape  # (C, H, W) for a conv, (tokens, features) for a Linear
        per_sample = math.prod(shape[1:]) if name.startswith("conv") else math.prod(shape[:-1])
        assert st.rows == N * per_sample, name
        assert st.calls == 1, name


@pytest.mark.parametrize("batching", list(BATCHINGS))
def test_statistics_do_not_depend_on_the_batching(reference, batching):
    make_data, batch_size, n_batches = BATCHINGS[batching]
    stats = _collect(make_data, batch_size)
    assert stats.num_samples == reference.num_samples == N
    torch.testing.assert_close(stats.example_input, _data()[:1])
    assert list(stats.layers) == list(reference.layers)
    for name, ref in reference.layers.items():
        st = stats.layers[name]
        assert st.side == ref.side, name
        assert st.rows == ref.rows, name
        assert st.calls == n_batches, name  # every non-empty batch, once
        assert st.output_shape == ref.output_shape, name
        assert st.weight_digest == ref.weight_digest, name
        scale = ref.gram.abs().max()
        torch.testing.assert_close(st.gram, ref.gram, rtol=1e-12, atol=1e-12 * scale)


def test_calibration_leaves_batchnorm_running_statistics_alone():
    model = _model()
    before = {k: v.clone() for k, v in model.bn.state_dict().items()}
    balf.collect_statistics(model, list(_data().split([4, 4, 2, 1])), progress=False)
    for key, value in model.bn.state_dict().items():
        assert torch.equal(value, before[key]), key
