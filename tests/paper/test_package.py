"""The packages stand alone: a wheel installed outside the checkout.

The wheel is built (setuptools' PEP 517 hook) from a copy of ``pyproject.toml``, ``README.md``
and ``lib/`` (the checkout is not written to), installed with
``--no-deps`` into a venv that sees the system's torch (``--system-site-packages``), and driven
from a temporary working directory without ``PYTHONPATH``:

- the method (``balf``) compresses, saves and reloads a model with the paper's dependencies
  (matplotlib, pandas, timm, torchvision, PyYAML) made unimportable, and the wheel declares only
  torch, numpy, safetensors and tqdm as its requirements, the rest under the ``[paper]`` extra;
- the paper's package (``balf_paper``) runs a sweep and renders it, reading its sweep values,
  YAML defaults and other works' table from the package data, nothing from the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SWEEP = """
import json, sys
from pathlib import Path
import torch
import balf
from balf_paper.experiments.render.tree import render_model
from balf_paper.experiments.sweep.runner import SweepConfig, default_knobs, run_sweep
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


CORE_ONLY = """
import json, sys
# as if not installed: `import x` raises ImportError, importlib.util.find_spec("x") gives None
for name in ("balf_paper", "matplotlib", "pandas", "timm", "torchvision", "yaml"):
    sys.modules[name] = None
import torch
from torch import nn
import balf

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 10))
small, report = balf.compress(model, torch.randn(16, 3, 8, 8), balf.BALFConfig(0.5), progress=False)
balf.save(small, "small.safetensors")
fresh = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 10))
loaded = balf.load("small.safetensors", fresh)
x = torch.randn(2, 3, 8, 8)
print(json.dumps({"file": balf.__file__, "same": bool(torch.equal(loaded(x), small(x))),
                  "ratio": report.layer_flops_ratio}))
"""

PACKAGE_DATA = """
import json
from balf_paper import package_file
from balf_paper.experiments.cli.options import find_config
from balf_paper.experiments.render.plots import load_other_works
print(json.dumps({"config": str(find_config("cifar10_factorize_sweep.yaml")),
                  "works": len(load_other_works(package_file("other_works.csv")))}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """``(venv python, wheel, environment)`` of the wheel installed in a fresh venv."""
    tmp_path = tmp_path_factory.mktemp("wheel")
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
    # --force-reinstall: a balf already installed where the venv sees it (system site) is not
    # "already satisfied"; the wheel itself is what is tested
    options = ("--no-deps", "--no-build-isolation", "--force-reinstall")
    _run(python, *pip, *options, wheel, cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    return python, wheel, env


def _requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
    return [line.split(":", 1)[1].strip() for line in metadata.splitlines()
            if line.startswith("Requires-Dist:")]


@pytest.mark.slow
def test_the_method_needs_only_torch_numpy_safetensors_tqdm(installed, tmp_path: Path):
    python, wheel, env = installed
    required = _requirements(wheel)
    core = sorted(r.split(">")[0].split("=")[0].strip() for r in required if "extra ==" not in r)
    assert core == ["numpy", "safetensors", "torch", "tqdm"]
    paper = sorted(r.split(";")[0].strip() for r in required if "extra == \"paper\"" in r)
    assert paper == ["matplotlib", "pandas", "pyyaml", "timm", "torchvision"]
    report = json.loads(_run(python, "-c", CORE_ONLY, cwd=tmp_path, env=env).splitlines()[-1])
    assert Path(report["file"]).is_relative_to(python.parents[1]), report["file"]
    assert report["same"] and report["ratio"] <= 0.5 + 1e-9


@pytest.mark.slow
def test_the_paper_package_reads_its_files_from_the_wheel(installed, tmp_path: Path):
    python, _, env = installed
    report = json.loads(_run(python, "-c", PACKAGE_DATA, cwd=tmp_path, env=env).splitlines()[-1])
    assert Path(report["config"]).is_relative_to(python.parents[1]), report["config"]
    assert report["works"] > 0


@pytest.mark.slow
def test_wheel_installs_and_sweeps_outside_the_checkout(installed, tmp_path: Path):
    python, _, env = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    report = json.loads(_run(python, "-c", SWEEP, cwd=work, env=env).strip().splitlines()[-1])
    assert Path(report["file"]).is_relative_to(python.parents[1]), report["file"]
    assert report["knobs"] == ["original", 0.5, 0.8]
    assert report["default_knobs"] and all(0 < k <= 1 for k in report["default_knobs"])
    assert report["written"] == ["accuracy_vs_flops.png", "accuracy_vs_params.png"] + [
        f"{t}.{e}" for t in ("matched_flops", "matched_params", "points") for e in ("md", "tex")
    ]
    assert (work / "results" / "synthetic" / "resnet20" / "flops_auto" / "results.json").is_file()
