"""Sharing survives balf.save/balf.load: tied parameters, a module registered under two names,
and a model compressed twice all round-trip with identical outputs and sharing; a ``tied`` map
that does not fit the model is refused by name.
"""

import pytest
import torch
from _saved_files import edit_spec
from torch import nn

import balf


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.mid = nn.Linear(32, 32)
        self.head = nn.Linear(32, 50, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens):
        return self.head(torch.tanh(self.mid(self.emb(tokens))))


class Aliased(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Linear(32, 32)
        self.q = self.p  # the same module under a second name
        self.out = nn.Linear(32, 4)

    def forward(self, x):
        return self.out(torch.tanh(self.q(torch.tanh(self.p(x)))))


def test_tied_parameters_come_back_as_one_parameter(tmp_path):
    model = TiedLM().eval()
    tokens = torch.randint(0, 50, (64, 8))
    small, report = balf.compress(model, tokens, balf.RankRatioConfig(0.25), progress=False)
    assert report.layers["mid"].factorized and "head" in report.skipped
    balf.save(small, tmp_path / "m.safetensors")
    again = balf.load(tmp_path / "m.safetensors", TiedLM())
    assert again.head.weight is again.emb.weight
    assert balf.count_params(again) == balf.count_params(small)
    with torch.no_grad():
        assert torch.equal(again(tokens), small(tokens))
    again = again.double()  # still one parameter after a dtype change
    assert again.head.weight is again.emb.weight


def test_a_module_under_two_names_round_trips(tmp_path):
    model = Aliased().eval()
    x = torch.randn(64, 32)
    small, report = balf.compress(model, x, balf.RankRatioConfig(0.25), progress=False)
    assert small.p is small.q and report.layers["p"].factorized
    balf.save(small, tmp_path / "m.safetensors")
    again = balf.load(tmp_path / "m.safetensors", Aliased())
    assert again.p is again.q
    assert balf.count_params(again) == balf.count_params(small)
    with torch.no_grad():
        assert torch.equal(again(x), small(x))


def test_a_model_compressed_twice_round_trips(tmp_path):
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 8)).eval()
    x = torch.randn(128, 32)
    once, _ = balf.compress(model, x, balf.RankRatioConfig(0.5), progress=False)
    twice, report = balf.compress(once, x, balf.RankRatioConfig(0.5), progress=False)
    assert any(r.factorized for r in report.layers.values())
    balf.save(twice, tmp_path / "m.safetensors")
    fresh = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 8))
    again = balf.load(tmp_path / "m.safetensors", fresh)
    with torch.no_grad():
        assert torch.equal(again(x), twice(x))
    assert balf.count_params(again) == balf.count_params(twice)


@pytest.mark.parametrize(
    "tie",
    [("head.weight", "gone.weight"), ("gone.weight", "emb.weight"), ("mid.bias", "emb.weight")],
    ids=["missing-first-name", "missing-alias", "other-shape"],
)
def test_a_tied_map_that_does_not_fit_the_model_is_named(tmp_path, tie):
    """A consistent file (its checksum recomputed) whose ``tied`` map names a tensor this model
    lacks, or ties tensors of two shapes: a SaveFormatError naming both, not an AttributeError
    from inside the re-tying."""
    model = TiedLM().eval()
    small, _ = balf.compress(model, torch.randint(0, 50, (64, 8)), balf.RankRatioConfig(0.25),
                             progress=False)  # fmt: skip
    path = balf.save(small, tmp_path / "m.safetensors")
    alias, name = tie
    edit_spec(path, lambda spec: spec["tied"].update({alias: name}), recompute_checksum=True)
    with pytest.raises(balf.SaveFormatError, match=rf"ties '{alias}'.*'{name}'"):
        balf.load(path, TiedLM())
