"""Modes are declared once beside their config class: names, knobs, labels, colours, defaults."""

from __future__ import annotations

import dataclasses

import pytest

import balf
from balf.layers.geometry import SIDES
from balf.ranks.costs import registered_metrics
from balf.ranks.modes import MethodConfig, mode_spec, registered_modes
from balf_paper.experiments.modes import display_of
from balf_paper.experiments.render.plots import mode_style
from balf_paper.experiments.render.tables import mode_label
from balf_paper.experiments.sweep.config import default_knobs
from balf_paper.folding import FOLDING_MODES, FoldingConfig

ALL_MODES = list(registered_modes())


def test_registry_order_is_the_display_order():
    assert ALL_MODES == [
        "flops_auto",
        "params_auto",
        "latency_auto",
        "flops_auto_sensitivity",
        "params_auto_sensitivity",
        "flops_auto_log_energy",
        "params_auto_log_energy",
        "flops_auto_log_sensitivity",
        "params_auto_log_sensitivity",
        "flops_auto_fisher",
        "params_auto_fisher",
        "flops_auto_damage",
        "params_auto_damage",
        "flops_auto_selected",
        "params_auto_selected",
        "energy",
        "energy_act_aware",
        "uniform",
        "uniform_act_aware",
        "rank_ratio",
        "rank_ratio_act_aware",
        "folding_ar",
        "folding_r",
        "folding_none",
    ]
    assert list(balf.MODES) == ALL_MODES[:21]
    assert FOLDING_MODES == {"folding_ar": "ar", "folding_r": "r", "folding_none": "none"}


@pytest.mark.parametrize("name", ALL_MODES)
def test_a_mode_makes_a_config_that_reports_the_mode_and_knob(name):
    spec = mode_spec(name)
    config = spec.make(0.5)
    assert isinstance(config, MethodConfig) and isinstance(config, spec.config_class)
    assert config.mode == name and config.knob == 0.5
    assert config.to_dict()["type"] == spec.config_class.__name__


@pytest.mark.parametrize("name", ALL_MODES)
def test_labels_and_styles_come_from_the_declaration(name):
    display = display_of(name)
    assert mode_label(name) == display.label
    assert mode_style(name) == display
    assert mode_style(name).emphasised == ("_auto" in name and "log_energy" not in name)


def test_unknown_modes_are_shown_by_name():
    assert mode_label("my_mode") == "my_mode"
    assert mode_style("my_mode").label == "my_mode"
    with pytest.raises(balf.BALFError, match="unknown mode 'my_mode'"):
        mode_spec("my_mode")


@pytest.mark.parametrize("name", ALL_MODES)
def test_every_mode_has_default_knobs(name):
    knobs = default_knobs(name, "resnet20")
    assert knobs and all(0 < k <= 1 for k in knobs)


def test_folding_is_a_config_like_the_others():
    config = FoldingConfig(0.7, repair="r")
    assert config.needs_data and config.mode == "folding_r"
    assert dataclasses.asdict(config) == {"keep": 0.7, "repair": "r"}
    with pytest.raises(balf.BALFError, match="repair must be one of"):
        FoldingConfig(0.5, repair="x")


def test_metric_and_side_literals():
    assert list(registered_metrics()) == ["flops", "params", "latency"]
    assert SIDES == ("input", "output")
    with pytest.raises(balf.BALFError, match="metric must be one of"):
        balf.BALFConfig(0.5, metric="macs")


def test_the_paper_modules_old_paths_warn_and_give_the_new_modules():
    import importlib

    with pytest.warns(DeprecationWarning, match="balf_paper.experiments"):
        old = importlib.import_module("balf.experiments.sweep")
    import balf_paper.experiments.sweep as new

    assert old is new


def test_the_module_paths_before_the_subfolders_warn_and_give_the_new_modules(monkeypatch):
    import importlib
    import sys
    import warnings

    import balf_paper.experiments.render.plots as new

    monkeypatch.delitem(sys.modules, "balf_paper.experiments.plots", raising=False)  # imported
    with pytest.warns(DeprecationWarning, match="moved to balf_paper.experiments.render.plots"):
        old = importlib.import_module("balf_paper.experiments.plots")
    assert old is new
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from balf_paper.experiments.tables import mode_label
    assert mode_label("flops_auto") == "BALF (FLOPs budget)"


def test_python_m_with_the_old_entry_point_still_runs():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "balf.experiments", "--help"], capture_output=True, text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "datasets:" in done.stdout
