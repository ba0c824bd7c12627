"""Temporary files of killed writes (atomic writes name them ``<name>.pid<PID>@<host>.<x>.tmp``)
and the one policy for removing them: a file of a process of this host that no longer runs goes at
once, one of another host after a day (it may still be writing), one whose writer is unknown after
an hour. Used by the caches (:meth:`balf.Cache.remove_orphans`) and by :func:`balf.save` for the
files a killed save left beside its target."""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["glob_escape", "remove_orphans", "remove_save_orphans"]

log = logging.getLogger(__name__)

_TMP_OWNER = re.compile(r"\.pid(\d+)@([A-Za-z0-9_-]*)\.[^.]*\.tmp$")
_ORPHAN_AGE_S = {"own host": 0.0, "other host": 86400.0, "unknown": 3600.0}


def remove_orphans(candidates: Iterable[Path], where: Path | str) -> list[Path]:
    """Delete the ``candidates`` (temporary files) whose writer is gone, by the policy above;
    ``where`` names the place in the log line."""
    removed = []
    host, now = _host(), time.time()
    for tmp in candidates:
        m = _TMP_OWNER.search(tmp.name)
        if m is None:
            owner = "unknown"
        elif m.group(2) == host:
            owner = None if _alive(int(m.group(1))) else "own host"
        else:
            owner = "other host"
        try:
            if owner is not None and now - tmp.stat().st_mtime >= _ORPHAN_AGE_S[owner]:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:
            continue
    if removed:
        log.info("removed %d orphaned temporary file(s) of %s", len(removed), where)
    return removed


def remove_save_orphans(path: Path) -> list[Path]:
    """Delete the ``.<name>.pid<PID>@<host>.*.tmp`` files a killed save of ``path`` left."""
    if not path.parent.is_dir():
        return []
    pattern = f".{glob_escape(path.name)}.pid*.tmp"
    return remove_orphans((p for p in path.parent.glob(pattern) if _TMP_OWNER.search(p.name)), path)


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid <= 2**22
    return True
