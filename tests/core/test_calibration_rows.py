"""Layers that saw fewer calibration rows than their rank are named.

A classifier head sees one row per image: with 16 images a 64-wide head is cut to rank 16 while
its ``energy_kept`` reads 1.0. The old code said nothing.
"""

import warnings

import pytest
import torch
from torch import nn

import balf


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 64),
        nn.ReLU(),
        nn.Linear(64, 64),
    ).eval()


STRATEGIES = {
    "whole-model": None,
    "block-by-block": balf.BlockByBlock(),
    "block-by-block-refit": balf.BlockByBlock(refit=balf.AnchoredRefit(1.0)),
}


@pytest.mark.parametrize("strategy", STRATEGIES.values(), ids=list(STRATEGIES))
def test_a_layer_with_fewer_rows_than_its_rank_is_named_with_a_warning_and_in_the_report(strategy):
    """Under every calibration strategy (block by block listed nothing and said nothing)."""
    x = torch.randn(12, 3, 8, 8)
    with pytest.warns(UserWarning, match=r"6 \(12 rows, needs 64\).*more samples"):
        _, report = balf.compress(
            _model(), x, balf.BALFConfig(0.5), progress=False, strategy=strategy
        )
    assert report.under_calibrated == {
        "4": {"rows": 12, "rows_needed": 16},
        "6": {"rows": 12, "rows_needed": 64},
    }
    assert report.to_dict()["under_calibrated"] == report.under_calibrated


def test_enough_rows_give_no_warning_and_an_empty_entry():
    x = torch.randn(80, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, report = balf.compress(_model(), x, balf.BALFConfig(0.5), progress=False)
    assert report.under_calibrated == {}


def test_one_warning_per_compressor_but_every_report_records_it():
    compressor = balf.Compressor(_model(), torch.randn(12, 3, 8, 8), progress=False)
    with pytest.warns(UserWarning, match="fewer calibration rows"):
        compressor.compress(balf.BALFConfig(0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, report = compressor.compress(balf.BALFConfig(0.7))
    assert set(report.under_calibrated) == {"4", "6"}
