"""``--save-model DIR`` checked before a sweep computes anything: a directory balf can write."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from balf.calibration.distributed import is_main_process
from balf.errors import BALFError

__all__ = ["check_save_dir"]


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
