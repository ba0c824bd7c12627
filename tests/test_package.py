"""The package stands alone: a wheel installed outside the checkout runs a sweep and renders it.

The wheel is built (setuptools' PEP 517 hook) from a copy of ``pyproject.toml``, ``README.md``
and ``lib/`` (the checkout is not written to), installed with ``--no-deps`` into a venv that sees
the system's torch (``--system-site-packages``), and driven from a temporary working directory
without ``PYTHONPATH``: sweep values come from the package data, nothing from ``data/`` or
``configs/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SWEEP = """
import json, sys
from pathlib import Path
import torch
import balf
from balf_paper.experiments.render import render_model
from balf_paper.experiments.sweep import SweepConfig, default_knobs, run_sweep
from balf_paper.models import create_model

torch.manual_seed(0)
model = create_model("resnet20", pretrained=False).eval()
x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
config = SweepConfig("synthetic", "resnet20", "flops_auto", [0.5, 0.8], calib_size=8)
out = Path("results") / "synthetic" / "resnet20"
results = run_sweep(
    config, model, [x], [(x, y)], out / "flops_auto", example_input=x[:1], progress=False
)
written = render_model(out, "synthetic", "resnet20", formats=("png",))
print(json.dumps({
    "file": balf.__file__,
    "prefix": sys.prefix,
    "knobs": [p["knob"] for p in results["points"]],
    "default_knobs": default_knobs("energy", "resnet20"),
    "written": sorted(p.name for p in written),
}))
"""


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{cmd}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_wheel_installs_and_sweeps_outside_the_checkout(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(REPO / "lib", src / "lib", ignore=ignore)
    build = "from setuptools import build_meta; build_meta.build_wheel('../dist')"
    _run(sys.executable, "-c", build, cwd=src)  # the PEP 517 hook pip would call
    (wheel,) = (tmp_path / "dist").glob("balf-*.whl")

    _run(sys.executable, "-m", "venv", "--system-site-packages", "venv", cwd=tmp_path)
    python = tmp_path / "venv" / "bin" / "python"
    pip = ("-m", "pip", "--disable-pip-version-check", "-q", "install")
    _run(python, *pip, "--no-deps", "--no-build-isolation", wheel, cwd=tmp_path)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    report = json.loads(_run(python, "-c", SWEEP, cwd=work, env=env).strip().splitlines()[-1])
    assert Path(report["file"]).is_relative_to(tmp_path / "venv"), report["file"]
    assert report["knobs"] == ["original", 0.5, 0.8]
    assert report["default_knobs"] and all(0 < k <= 1 for k in report["default_knobs"])
    assert report["written"] == ["accuracy_vs_flops.png", "accuracy_vs_params.png"] + [
        f"matched_{q}.{e}" for q in ("flops", "params") for e in ("md", "tex")
    ]
    assert (work / "results" / "synthetic" / "resnet20" / "flops_auto" / "results.json").is_file()
