"""Temporary files that a killed :func:`balf.save` left beside its target, removed on the next
save to the same place (with the policy of the cache: :meth:`balf.Cache.remove_orphans`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from balf.io.cache import _ORPHAN_AGE_S, _TMP_OWNER, _alive, _host

__all__ = ["remove_save_orphans"]

log = logging.getLogger(__name__)


def remove_save_orphans(path: Path) -> list[Path]:
    """Delete ``.<name>.pid<PID>@<host>.*.tmp`` files of ``path`` whose writer is gone.

    A file of a process of this host that no longer runs is removed at once; one of another
    host after a day (it may still be writing).
    """
    if not path.parent.is_dir():
        return []
    removed = []
    host, now = _host(), time.time()
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.pid*.tmp"):
        m = _TMP_OWNER.search(tmp.name)
        if m is None:
            continue
        if m.group(2) == host:
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
        log.info("removed %d temporary file(s) of killed saves of %s", len(removed), path)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
