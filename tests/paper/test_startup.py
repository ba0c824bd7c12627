"""A script's ``--help`` imports only what it needs to print its options: not torchvision, timm,
matplotlib or pandas (each costs about a second; their users import them when they run).
Timings themselves are measured by ``scripts/benchmarks/measure_startup.py``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torchvision", "timm", "matplotlib", "pandas", "transformers")

PROBE = """
import runpy, sys
sys.argv = [{script!r}, "--help"]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit:
    pass
print("LOADED", sorted(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize(
    "script", ["scripts/cifar10/factorize_sweep.py", "scripts/fashion_mnist/calib_size_sweep.py"]
)
def test_help_does_not_import_the_heavy_packages(script):
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(script=script, heavy=HEAVY)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "LOADED []"
