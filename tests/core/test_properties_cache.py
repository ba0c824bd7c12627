"""Every path into the cache is invalidated by changed weights.

A cached run after a layer's weight was replaced by *random* values must give exactly what an
uncached run gives — for every way statistics and decompositions reach the cache: calibration
data, a :class:`balf.Statistics` object, or no data at all (data-free configs), with every layer
or a subset of layers chosen, and with the changed layer chosen or upstream of the chosen ones.
(A rescaled weight would not do: it keeps the singular vectors, and with them the ranks and the
factors' directions of a stale entry.)
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import balf


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(12, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


CONFIGS = {
    "balf": balf.BALFConfig(0.5),
    "energy-act-aware": balf.EnergyConfig(0.9),
    "energy-data-free": balf.EnergyConfig(0.9, activation_aware=False),
    "uniform-data-free": balf.UniformConfig(0.5, activation_aware=False),
}

# (id, layers to compress, layer whose weight is replaced)
CHANGES = [
    ("all-layers-change-first", None, "0"),
    ("all-layers-change-last", None, "6"),
    ("subset-change-chosen", ["2", "6"], "2"),
    ("subset-change-upstream", ["2", "6"], "0"),
]

SOURCES = ["data", "statistics", "none"]


def _compress(model, x, source, config, layers, cache):
    """Compress with calibration ``data``, a ``Statistics`` object, or ``none`` (data-free)."""
    if source == "data":
        given = x
    elif source == "statistics":
        given = balf.collect_statistics(model, x, layers, progress=False)
    else:
        given = None
    compressor = balf.Compressor(model, given, layers, cache=cache, progress=False)
    return compressor.compress(config)


def _cases():
    for source in SOURCES:
        for config_id, config in CONFIGS.items():
            if source == "none" and config.activation_aware:
                continue
            for change_id, layers, changed in CHANGES:
                yield pytest.param(
                    source, config, layers, changed, id=f"{source}-{config_id}-{change_id}"
                )


@pytest.mark.parametrize(("source", "config", "layers", "changed"), list(_cases()))
def test_changed_weights_give_the_uncached_result(tmp_path, source, config, layers, changed):
    torch.manual_seed(0)
    model, x = _cnn(), torch.randn(24, 3, 8, 8)
    cache = balf.Cache(tmp_path, data_tag="calib", data_size=len(x))
    _compress(model, x, source, config, layers, cache)  # fills the cache
    assert list(tmp_path.rglob("*.pt"))

    with torch.no_grad():
        weight = model.get_submodule(changed).weight
        weight.copy_(torch.randn_like(weight) * weight.std())
    cached, cached_report = _compress(model, x, source, config, layers, cache)
    fresh, fresh_report = _compress(model, x, source, config, layers, None)

    assert cached_report.ranks == fresh_report.ranks
    with torch.no_grad():
        torch.testing.assert_close(cached(x), fresh(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("source", ["data", "statistics"])
def test_unchanged_weights_hit_the_cache(tmp_path, source, monkeypatch):
    """The converse: nothing is recomputed when nothing changed (the cache is used at all)."""
    import balf.pipeline.cached as api  # where the decompositions are computed or loaded

    torch.manual_seed(0)
    model, x = _cnn(), torch.randn(24, 3, 8, 8)
    cache = balf.Cache(tmp_path, data_tag="calib", data_size=len(x))
    first = _compress(model, x, source, CONFIGS["balf"], None, cache)[1]
    calls = []
    original = api.decompose_layers
    monkeypatch.setattr(
        api, "decompose_layers", lambda *a, **kw: calls.append(1) or original(*a, **kw)
    )
    second = _compress(model, x, source, CONFIGS["balf"], None, cache)[1]
    assert calls == []
    assert second.ranks == first.ranks


def test_entries_of_another_library_version_are_recomputed(tmp_path, monkeypatch):
    """The library version is part of every key: what balf 0.1 cached, 0.2 recomputes (and
    gets the same result), rather than loading entries another version's code wrote."""
    import balf.io.cache as cache_module

    torch.manual_seed(0)
    model, x = _cnn(), torch.randn(24, 3, 8, 8)
    cache = balf.Cache(tmp_path, data_tag="calib", data_size=len(x))
    with monkeypatch.context() as m:
        m.setattr(cache_module, "__version__", "0.1.0")
        old_report = _compress(model, x, "data", CONFIGS["balf"], None, cache)[1]
    old = set(tmp_path.rglob("*.pt"))
    report = _compress(model, x, "data", CONFIGS["balf"], None, cache)[1]
    new = set(tmp_path.rglob("*.pt")) - old
    assert old and len(new) == len(old)
    assert report.ranks == old_report.ranks


def test_a_full_disk_while_writing_the_cache_warns_and_goes_on(tmp_path, monkeypatch):
    """A cache is an optimisation: ENOSPC while writing an entry must not end a compression
    (or the sweep around it); the result is the uncached one and nothing half-written stays."""
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    torch.manual_seed(0)
    model, x = _cnn(), torch.randn(24, 3, 8, 8)
    fresh_report = _compress(model, x, "data", CONFIGS["balf"], None, None)[1]
    monkeypatch.setattr(os, "fsync", full)
    cache = balf.Cache(tmp_path, data_tag="calib", data_size=len(x))
    with pytest.warns(UserWarning, match="could not write the statistics cache entry.*space"):
        report = _compress(model, x, "data", CONFIGS["balf"], None, cache)[1]
    assert report.ranks == fresh_report.ranks
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
