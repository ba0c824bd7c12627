"""Whether a latency table measured earlier still describes the conditions of its use.

The timings depend on the CPU threads, the device and the dtype at the time of use; a
:class:`balf.Compressor` that measured a table re-measures it when one of them has changed
(e.g. after ``torch.set_num_threads(2)``) instead of allocating with stale latencies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from balf.ranks.latency.measure import _device_name
from balf.ranks.latency.table import LatencyTable

__all__ = ["current_conditions", "is_stale"]


def current_conditions(model: nn.Module, options: Mapping[str, Any]) -> dict[str, Any]:
    """``{"threads", "device", "dtype"}`` a measurement with ``options`` would record now."""
    param = next(model.parameters())
    return {
        "threads": options.get("threads") or torch.get_num_threads(),
        "device": _device_name(param.device),
        "dtype": str(param.dtype).removeprefix("torch."),
    }


def is_stale(table: LatencyTable, model: nn.Module, options: Mapping[str, Any]) -> bool:
    """Whether ``table``'s key differs from the current threads, device or dtype."""
    now = current_conditions(model, options)
    return any(table.key.get(k) != v for k, v in now.items())
