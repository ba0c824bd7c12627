"""Sharing survives balf.save/balf.load (issue 24 item 4): tied parameters, a module registered
under two names, and a model compressed twice all round-trip with identical outputs and sharing.
"""

import torch
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
