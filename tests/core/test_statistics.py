"""Calibration statistics: accumulation, side choice, state restoration, persistence, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import balf
import balf.layers.dispatch as representation
from balf.layers import _conv, _grams
from balf.layers.dispatch import input_rows, output_rows

F64 = torch.float64


class TwiceLinear(nn.Module):
    """Applies the same Linear twice: every call must be accumulated."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6, dtype=F64)

    def forward(self, x):
        return self.lin(torch.relu(self.lin(x)))


def test_module_called_several_times_accumulates_every_call():
    model = TwiceLinear()
    x = torch.randn(10, 6, dtype=F64)
    stats = balf.collect_statistics(model, x, side="output", progress=False)
    st = stats.layers["lin"]
    assert st.calls == 2 and st.rows == 20
    with torch.no_grad():
        y1 = model.lin(x) - model.lin.bias
        y2 = model.lin(torch.relu(model.lin(x))) - model.lin.bias
    expected = y1.T @ y1 + y2.T @ y2
    torch.testing.assert_close(st.gram[0], expected)
    assert stats.rows_per_sample("lin") == 2


def test_side_is_input_only_when_d_below_k():
    model = nn.Sequential(nn.Linear(4, 16), nn.Linear(16, 4))
    stats = balf.collect_statistics(model, torch.randn(5, 4), progress=False)
    assert stats.layers["0"].side == "input"
    assert stats.layers["1"].side == "output"


@pytest.mark.parametrize(
    ("conv", "shape"),
    [
        (nn.Conv2d(3, 4, 3, padding=1, stride=2, dtype=F64), (7, 3, 8, 8)),
        (nn.Conv1d(3, 4, 3, padding=1, stride=2, dtype=F64), (7, 3, 8)),
        (nn.Conv1d(3, 4, 4, padding="same", dilation=2, dtype=F64), (7, 3, 9)),
    ],
    ids=["conv2d", "conv1d", "conv1d-same-dilated"],
)
def test_chunked_im2col_equals_unchunked(monkeypatch, conv, shape):
    x = torch.randn(shape, dtype=F64)
    full = torch.cat(list(input_rows(conv, x)), dim=1)
    monkeypatch.setattr(_conv, "_IM2COL_CHUNK_ELEMENTS", 1)  # one image per chunk
    chunks = list(input_rows(conv, x))
    assert len(chunks) == 7
    torch.testing.assert_close(torch.cat(chunks, dim=1), full)
    # im2col rows times the weight matrices give the conv's output rows
    w = representation.weight_matrices(conv)
    with torch.no_grad():
        torch.testing.assert_close(full @ w, output_rows(conv, conv(x)))


@pytest.mark.parametrize("kind", ["tensor", "dataloader-tuples", "list-of-tensors"])
def test_accepts_tensors_tuples_and_loaders(kind):
    model = nn.Sequential(nn.Linear(5, 3))
    x = torch.randn(20, 5)
    data = {
        "tensor": x,
        "dataloader-tuples": DataLoader(TensorDataset(x, torch.zeros(20)), batch_size=6),
        "list-of-tensors": list(x.split(7)),
    }[kind]
    stats = balf.collect_statistics(model, data, progress=False)
    assert stats.num_samples == 20
    assert stats.example_input.shape == (1, 5)


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        self.lin(x)
        raise RuntimeError("boom")


def test_hooks_mode_and_grad_restored_after_an_error():
    model = Exploding().train()
    torch.set_grad_enabled(True)
    with pytest.raises(RuntimeError, match="boom"):
        balf.collect_statistics(model, torch.randn(2, 3), progress=False)
    assert model.training
    assert torch.is_grad_enabled()
    assert not model.lin._forward_hooks


def test_eval_mode_restored_after_success():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).train()
    balf.collect_statistics(model, torch.randn(4, 3), progress=False)
    assert model.training


def test_save_load_round_trip(tmp_path):
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    stats = balf.collect_statistics(model, torch.randn(3, 2, 6, 6), progress=False)
    stats.save(tmp_path / "s.pt")
    loaded = balf.Statistics.load(tmp_path / "s.pt")
    assert loaded.num_samples == 3
    assert list(loaded.layers) == list(stats.layers)
    for name in stats.layers:
        torch.testing.assert_close(loaded.layers[name].gram, stats.layers[name].gram)
        assert loaded.layers[name].output_shape == stats.layers[name].output_shape
    assert not list(tmp_path.glob("*.tmp"))


def test_nan_activations_name_the_layer():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    x = torch.randn(4, 3)
    x[0, 0] = float("nan")
    with pytest.raises(balf.StatisticsError, match="'0'"):
        balf.collect_statistics(model, x, progress=False)


@pytest.mark.parametrize("data", [[], torch.empty(0, 3)], ids=["empty-list", "empty-tensor"])
def test_empty_data_is_rejected(data):
    with pytest.raises(balf.BALFError, match="empty"):
        balf.collect_statistics(nn.Linear(3, 2), data, progress=False)


def test_unknown_and_unsupported_layer_names_are_rejected():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Conv2d(3, 3, 3, padding_mode="circular"))
    with pytest.raises(balf.BALFError, match="unknown layer name '7'"):
        balf.collect_statistics(model, torch.randn(2, 3), layers=["7"], progress=False)
    with pytest.raises(balf.BALFError, match="'1' cannot be factorized: unsupported layer type"):
        balf.collect_statistics(model, torch.randn(2, 3), layers=["1"], progress=False)
    with pytest.raises(balf.BALFError, match="padding_mode='circular'"):
        balf.collect_statistics(model, torch.randn(2, 3), layers=["2"], progress=False)


def test_unsupported_layers_are_skipped_with_a_reason_by_default():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.Flatten(), nn.Linear(4 * 25, 2)
    )
    _, report = balf.compress(model, torch.randn(4, 3, 5, 5), balf.BALFConfig(0.6), progress=False)
    assert "padding_mode='reflect'" in report.skipped["0"]
    assert list(report.layers) == ["2"]


GRAM_LAYERS = [
    ("conv", lambda: nn.Conv2d(4, 6, 3, padding=1, dtype=F64), (3, 4, 6, 5)),
    ("conv-bias-grouped", lambda: nn.Conv2d(4, 6, 3, groups=2, dtype=F64), (3, 4, 6, 5)),
    ("conv-1x1-strided", lambda: nn.Conv2d(4, 8, 1, stride=2, bias=False, dtype=F64), (3, 4, 7, 6)),
    ("conv-1x1-grouped", lambda: nn.Conv2d(4, 8, 1, groups=4, dtype=F64), (2, 4, 3, 3)),
    ("linear-3d", lambda: nn.Linear(5, 7, dtype=F64), (2, 3, 5)),
    ("linear-wide-blocked", lambda: nn.Linear(300, 257, dtype=F64), (40, 300)),
    ("conv-wide-1x1", lambda: nn.Conv2d(260, 258, 1, dtype=F64), (2, 260, 3, 3)),
    ("conv-wide-3x3", lambda: nn.Conv2d(4, 257, 3, dtype=F64), (2, 4, 5, 5)),
    ("linear-four-panels", lambda: nn.Linear(520, 530, dtype=F64), (30, 520)),
    ("conv-four-panels", lambda: nn.Conv2d(520, 530, 1, dtype=F64), (2, 520, 3, 2)),
    ("conv1d", lambda: nn.Conv1d(4, 6, 3, padding=1, dtype=F64), (3, 4, 9)),
    ("conv1d-bias-grouped", lambda: nn.Conv1d(4, 6, 3, groups=2, dtype=F64), (3, 4, 8)),
    ("conv1d-1x1-strided", lambda: nn.Conv1d(4, 8, 1, stride=2, bias=False, dtype=F64), (3, 4, 7)),
    ("conv1d-wide-1x1", lambda: nn.Conv1d(260, 258, 1, dtype=F64), (2, 260, 5)),
]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
@pytest.mark.parametrize(("case", "make", "shape"), GRAM_LAYERS, ids=[c[0] for c in GRAM_LAYERS])
def test_fast_grams_equal_row_matrix_products(
    case, make, shape, channels_last, chunked, monkeypatch
):
    from balf.layers.dispatch import input_gram, output_gram

    if chunked:
        monkeypatch.setattr(_grams, "_GRAM_CHUNK_ELEMENTS", 1)
    layer = make()
    x = torch.randn(shape, dtype=F64)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
        layer = layer.to(memory_format=torch.channels_last)
    with torch.no_grad():
        y = layer(x)
    rows_out = output_rows(layer, y)
    torch.testing.assert_close(output_gram(layer, y, F64), rows_out.mT @ rows_out)
    rows_in = torch.cat(list(input_rows(layer, x)), dim=1)
    torch.testing.assert_close(input_gram(layer, x, F64), rows_in.mT @ rows_in)
