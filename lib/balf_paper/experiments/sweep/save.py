"""``--save-model DIR``: checked before a sweep computes anything (a directory balf can write),
then every newly computed compressed point saved there with :func:`balf.save`."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from balf.calibration.distributed import is_main_process
from balf.errors import BALFError
from balf.io.serialization import save as balf_save
from balf_paper.folding import FoldingConfig

__all__ = ["check_save_dir", "save_point_model", "wants_save"]

log = logging.getLogger(__name__)


def check_save_dir(save_dir: str | Path) -> Path:
    """Create ``save_dir`` if needed and prove it writable with a temporary file.

    Raises:
        BALFError: it is a file, cannot be created, or cannot be written (names it and why).
    """
    save_dir = Path(save_dir)
    if not is_main_process():
        return save_dir
    fix = "pass a writable directory with --save-model"
    if save_dir.exists() and not save_dir.is_dir():
        raise BALFError(f"--save-model {save_dir} is a file, not a directory; {fix}")
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=save_dir, prefix=".balf-write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BALFError(
            f"--save-model {save_dir} cannot be written ({exc.strerror}); {fix}"
        ) from exc
    return save_dir


def wants_save(method: Any, knob: float, save_dir: Any, save_knobs: Sequence[float] | None) -> bool:
    """Whether the point of ``method`` at ``knob`` is saved (Model Folding's never: it changes
    the architecture, which :func:`balf.load` cannot rebuild)."""
    if save_dir is None:
        return False
    if isinstance(method, FoldingConfig):
        log.warning("Model Folding changes the architecture: --save-model skips its points")
        return False
    return save_knobs is None or any(math.isclose(knob, k) for k in save_knobs)


def save_point_model(small: nn.Module, report: Any, path: Path) -> str:
    """Save ``small`` with :func:`balf.save` (its report in the header's ``"report"``); the path."""
    if is_main_process():
        meta = {"report": json.dumps(report.to_dict())} if report is not None else None
        balf_save(small, path, metadata=meta)
    return str(path)
