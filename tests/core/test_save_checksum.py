"""Saved models carry a checksum of their tensors, verified on load (issue 24 item 5).

The old files had none: one flipped byte in the tensor data loaded without error and changed
the outputs.
"""

import struct

import pytest
import torch
from torch import nn

import balf


def _saved(tmp_path):
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4)).eval()
    small, _ = balf.compress(model, torch.randn(64, 16), balf.RankRatioConfig(0.5), progress=False)
    path = balf.save(small, tmp_path / "m.safetensors")
    return small, path


def _flip_data_byte(path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", raw[:8])
    raw[8 + header_len + offset] ^= 0x40
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("offset", [0, 37, -1], ids=["first", "middle", "last"])
def test_a_flipped_byte_in_the_tensor_data_is_refused_naming_the_file(tmp_path, offset):
    _, path = _saved(tmp_path)
    if offset < 0:
        (header_len,) = struct.unpack("<Q", path.read_bytes()[:8])
        offset = path.stat().st_size - 8 - header_len - 1
    _flip_data_byte(path, offset)
    fresh = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
    with pytest.raises(balf.BALFError, match=r"m\.safetensors is corrupt.*checksum"):
        balf.load(path, fresh)


def test_an_intact_file_loads_with_identical_outputs(tmp_path):
    small, path = _saved(tmp_path)
    assert balf.read_spec(path)["checksum"]["algorithm"] == "blake2b-128"
    again = balf.load(path, nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4)))
    x = torch.randn(8, 16)
    with torch.no_grad():
        assert torch.equal(again(x), small(x))
