"""Peak resident memory of this process (Linux ``/proc``, else ``getrusage``)."""

from __future__ import annotations

import re
import resource
import sys
from pathlib import Path

__all__ = ["GIB", "peak_rss_bytes", "reset_peak_rss"]

#: Bytes in a GiB (2^30): the memory unit of the benchmark rows.
GIB = float(1 << 30)


def _status_bytes(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``VmHWM``, else ``getrusage``)."""
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs``); whether it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None
