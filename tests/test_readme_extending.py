"""The README's "Extending balf" section, followed verbatim: a toy layer kind and a toy rank rule.

The ``python`` blocks under "A new layer kind" and "A new rank rule" are executed exactly as the
README shows them (in a module of their own); the toy layer must then behave like a built-in
kind (activation error = Eckart–Young bound, full rank = dense layer, compressed inside a model)
and the toy rule like a built-in mode (registered, labelled, used by ``balf.compress``).
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import balf
from balf.modes import mode_spec, registered_modes
from balf_paper.experiments.plots import mode_style
from balf_paper.experiments.sweep import default_knobs
from balf_paper.experiments.tables import mode_label

README = Path(__file__).resolve().parents[1] / "README.md"


def _section_code(title: str) -> str:
    text = README.read_text()
    section = text.split("## Extending balf\n", 1)[1].split("\n## ", 1)[0]
    part = section.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", part, flags=re.S)
    assert len(blocks) == 1, f"expected one python block under {title!r}"
    return blocks[0]


@pytest.fixture(scope="module")
def readme():
    """The README's two blocks run in a fresh module; the registrations are undone afterwards."""
    from balf.adapters import base
    from balf.modes import _REGISTRY

    adapters, modes = dict(base._ADAPTERS), dict(_REGISTRY)
    module = types.ModuleType("readme_extending")
    sys.modules[module.__name__] = module
    for title in ("A new layer kind", "A new rank rule"):
        exec(compile(_section_code(title), f"README.md ({title})", "exec"), module.__dict__)
    yield module
    del sys.modules[module.__name__]
    base._ADAPTERS.clear()
    base._ADAPTERS.update(adapters)
    _REGISTRY.clear()
    _REGISTRY.update(modes)


def test_the_toy_layer_reaches_the_eckart_young_bound(readme):
    torch.manual_seed(0)
    layer = readme.ToyDense(12, 9).double()
    x = torch.randn(40, 12, dtype=torch.float64)
    stats = balf.collect_statistics(layer, x, progress=False)
    dec = balf.decompose_layer(layer, stats.layers[""])
    with torch.no_grad():
        y = layer(x) - layer.bias
    sigma2 = torch.linalg.svdvals(y).square()
    for rank in (1, 4, 9):
        small = balf.factorize_layer(layer, dec, rank)
        with torch.no_grad():
            err = float((layer(x) - small(x)).square().sum())
        assert err == pytest.approx(float(sigma2[rank:].sum()), rel=1e-6, abs=1e-9)
    with torch.no_grad():
        torch.testing.assert_close(small(x), layer(x))  # rank 9 = full rank


def test_the_toy_layer_is_compressed_inside_a_model(readme):
    torch.manual_seed(0)
    model = nn.Sequential(readme.ToyDense(16, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(64, 16)
    small, report = balf.compress(model, x, balf.BALFConfig(0.5), progress=False)
    assert report.layers["0"].kind == "toy_dense" and report.layers["0"].factorized
    assert isinstance(small[0], balf.LowRankLinear)
    assert report.layer_flops_ratio <= 0.5 + 1e-12


def test_the_toy_rank_rule_is_a_mode_like_the_others(readme):
    config = readme.HalfRankConfig(0.25)
    assert config.mode == "half_rank" and config.knob == 0.25
    assert mode_spec("half_rank").config_class is readme.HalfRankConfig
    assert list(registered_modes())[-1] == "half_rank"
    assert mode_label("half_rank") == "Half rank" and mode_style("half_rank").marker == "*"
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    _, report = balf.compress(model, torch.randn(64, 16), config, progress=False)
    assert report.ranks == {"0": 4, "2": 2}
    expected = {"type": "HalfRankConfig", "fraction": 0.25, "activation_aware": True}
    assert config.to_dict() == expected
    assert balf.config_for_mode("half_rank", 0.5) == readme.HalfRankConfig(0.5)
    with pytest.raises(balf.BALFError, match="no default knobs"):
        default_knobs("half_rank", "resnet20")
