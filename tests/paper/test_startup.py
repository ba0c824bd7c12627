"""An experiment's ``--help`` imports only what it needs to print its options: not torchvision,
timm, matplotlib or pandas (each costs about a second; their users import them when they run).
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
sys.argv = ["balf_paper.experiments", *{args!r}, "--help"]
try:
    runpy.run_module("balf_paper.experiments", run_name="__main__")
except SystemExit:
    pass
print("LOADED", sorted(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize(
    "args",
    [("factorize", "--dataset", "cifar10"), ("calib-size", "--dataset", "fashion-mnist"),
     ("language", "--task", "wikitext")],
)  # fmt: skip
def test_help_does_not_import_the_heavy_packages(args):
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=list(args), heavy=HEAVY)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "LOADED []"
