"""Two sweeps into one run folder: the second is refused, no point is lost.

The old runner let both run and exit 0; ``results.json`` kept one process's points only.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from balf import BALFError, Compressor
from balf_paper.experiments.sweep.runner import SweepConfig, run_sweep

_HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
print("locked", flush=True)
sys.stdin.read()
"""


def _sweep(out_dir, knobs):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 4),
    )  # fmt: skip
    x = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    config = SweepConfig("synthetic", "tiny", "flops_auto", list(knobs), calib_size=len(x))
    return run_sweep(config, model, [x], [(x, torch.arange(8) % 4)], out_dir,
                     example_input=x[:1], progress=False, argv=["test"])  # fmt: skip


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_second_process_is_refused_while_a_sweep_holds_the_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out / ".sweep.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BALFError, match=rf"in use by another sweep \(process {holder.pid}\)"):
            _sweep(out, [0.6])
        assert not (out / "results.json").exists()  # nothing written by the refused process
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    results = _sweep(out, [0.6])  # the lock went with its process
    assert [p["knob"] for p in results["points"]] == ["original", 0.6]


def test_a_sweep_started_inside_a_running_sweep_on_the_same_folder_is_refused(
    tmp_path, monkeypatch
):
    compress = Compressor.compress
    refused = []

    def nested(self, config, *args, **kwargs):
        try:
            _sweep(tmp_path, [0.7])
        except BALFError as exc:
            refused.append(str(exc))
        return compress(self, config, *args, **kwargs)

    monkeypatch.setattr(Compressor, "compress", nested)
    _sweep(tmp_path, [0.6])
    assert refused and "in use by another sweep" in refused[0]
    stored = json.loads((tmp_path / "results.json").read_text())
    assert [p["knob"] for p in stored["points"]] == ["original", 0.6]
