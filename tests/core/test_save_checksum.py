"""Saved models carry a checksum of their tensors and of their spec, verified on load.

Without them, one flipped byte in the tensor data loaded without error and changed the outputs,
and an edited ``tied`` or ``aliases`` map in the header silently changed the loaded model. Files
of balf 0.1 (tensor checksum only) still load.
"""

import struct

import pytest
import torch
from _saved_files import as_written_by_0_1, edit_spec
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
    spec = balf.read_spec(path)
    assert spec["checksum"]["algorithm"] == "blake2b-128" and "spec" in spec["checksum"]
    again = balf.load(path, nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4)))
    x = torch.randn(8, 16)
    with torch.no_grad():
        assert torch.equal(again(x), small(x))


def _fresh():
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))


EDITS = {
    "aliases": lambda spec: spec["aliases"].update({"2.second.bias": "0.second.bias"}),
    "tied": lambda spec: spec["tied"].update({"2.first.weight": "0.first.weight"}),
    "rank": lambda spec: spec["layers"][0].update(rank=spec["layers"][0]["rank"] - 1),
    "dropped-digest": lambda spec: spec["checksum"].pop("spec"),
}


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_an_edited_spec_is_refused_naming_the_file(tmp_path, edit):
    """The whole header is covered, not only the tensors."""
    _, path = _saved(tmp_path)
    edit_spec(path, EDITS[edit])
    with pytest.raises(balf.BALFError, match=r"m\.safetensors.*(header was edited|checksum)"):
        balf.load(path, _fresh())
    with pytest.raises(balf.BALFError, match=r"m\.safetensors"):
        balf.read_spec(path)  # balf.apply_spec(model, balf.read_spec(path)) is refused too


def test_a_file_of_balf_0_1_loads(tmp_path):
    """Version 0.2 still reads format 1 as 0.1 wrote it: no spec checksum, version 0.1.0."""
    small, path = _saved(tmp_path)
    edit_spec(path, as_written_by_0_1)
    assert balf.read_spec(path)["library_version"] == "0.1.0"
    again = balf.load(path, _fresh())
    x = torch.randn(8, 16)
    with torch.no_grad():
        assert torch.equal(again(x), small(x))
