"""One sweep process per run folder: an exclusive lock on ``<out_dir>/.sweep.lock``.

Two sweeps writing the same ``results.json`` would each rewrite it from their own copy, and the
last write would drop the other's finished points (both exiting 0). The sweep runner holds an
exclusive ``flock`` on the folder's lock file while it runs; a second process is refused at once
with a :class:`RunFolderBusyError` naming the folder and the holder's process id. The kernel
releases the lock when the holder exits, so a killed run leaves no stale lock.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from balf.calibration.distributed import is_main_process
from balf.errors import BALFError

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None

__all__ = ["LOCK_NAME", "RunFolderBusyError", "locks_out_dir", "run_folder_lock"]

LOCK_NAME = ".sweep.lock"
T = TypeVar("T")


class RunFolderBusyError(BALFError):
    """Another process is running a sweep into the same folder."""


@contextlib.contextmanager
def run_folder_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold the run folder's exclusive lock for the duration (the folder is created).

    Raises:
        RunFolderBusyError: another process holds it.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fcntl is None or not is_main_process():  # only the main process writes results
        yield
        return
    fd = os.open(out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderBusyError(
                f"{out_dir} is in use by another sweep (process {holder}); two sweeps into one "
                "run folder would lose each other's points. Wait for it to finish (a rerun "
                "resumes), or use another --out-root"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def locks_out_dir(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate a function with an ``out_dir`` argument: it runs holding that folder's lock."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        out_dir = signature.bind(*args, **kwargs).arguments["out_dir"]
        with run_folder_lock(out_dir):
            return fn(*args, **kwargs)

    return wrapper
