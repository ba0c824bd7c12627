"""Exceptions raised by balf. Every message names the problem and how to fix it."""

from __future__ import annotations

__all__ = [
    "BALFError",
    "BudgetError",
    "DatasetNotFoundError",
    "StatisticsError",
    "WeightsNotFoundError",
]


class BALFError(ValueError):
    """Invalid input to a balf function (bad ratio, unknown layer, empty data, ...)."""


class BudgetError(BALFError):
    """The requested budget is below the smallest cost the chosen layers can reach."""


class StatisticsError(BALFError):
    """Calibration statistics are unusable: NaN/Inf values or a mismatch with the model."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk where it was expected; the message gives path, layout and source."""


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights could not be fetched; the message says which file to place where."""
