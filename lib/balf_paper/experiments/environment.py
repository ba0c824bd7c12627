"""What a run directory records about where and how it ran."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from balf._version import __version__

__all__ = ["command_line", "cpu_state", "environment_info", "git_commit"]


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The repository's HEAD commit (suffixed ``-dirty`` with uncommitted changes), or ``None``."""
    cwd = Path(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def environment_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """Library and torch versions, Python, platform, device, git commit and the CPU's state
    (:func:`cpu_state`)."""
    device = torch.device(device or "cpu")
    info: dict[str, Any] = {
        "balf": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "git_commit": git_commit(),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover
        pass
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(device)
    info.update(cpu_state())
    return info


def cpu_state() -> dict[str, Any]:
    """What timings on a CPU depend on beyond the code: the load average (1, 5 and 15 minutes,
    ``None`` where unknown) and the frequency governor of CPU 0 (``None`` where not readable,
    e.g. in a virtual machine)."""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        load = None
    governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    try:
        gov = governor.read_text().strip()
    except OSError:
        gov = None
    return {"load_average": load, "cpu_governor": gov}


_PROGRAM: list[str] = []


def set_program(words: Sequence[str]) -> None:
    """Record the program words of :func:`command_line` in place of ``sys.argv[0]``, e.g.
    ``["-m", "balf_paper.experiments", "factorize"]`` for the experiments' entry point (whose
    experiment name is not among the arguments the experiment parses)."""
    _PROGRAM[:] = list(words)


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command of this run, shell-quoted: the script (``sys.argv[0]``, or the words of
    :func:`set_program`) with ``argv``.

    Args:
        argv: the arguments the script's ``main`` parsed (default: ``sys.argv[1:]``), so a
            ``main(argv)`` called from Python records what it was given.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    program = _PROGRAM or [sys.argv[0]]
    return " ".join(shlex.quote(a) for a in ["python", *program, *args])
