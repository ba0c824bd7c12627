"""Shared fixtures: deterministic seeds, float64 defaults where exactness is asserted."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
