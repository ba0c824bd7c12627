"""Shared fixtures: deterministic seeds, float64 defaults where exactness is asserted.

Tests live by package: ``core/`` (the method alone, fast), ``e2e/`` (the method on real
architectures and the code of the documentation) and ``paper/`` (the reproduction package,
scripts and committed results). ``_fixtures.py`` (fixture data in the real layouts) is
importable from all.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
