"""Latency budgets: ``BALFConfig(ratio, metric="latency")`` keeps ``ratio`` of the model's latency
measured on the target device. :mod:`.table` holds the measured tables and the latency metric,
:mod:`.measure` measures them with ``torch.utils.benchmark``."""

from balf.ranks.latency.measure import measure_latency, time_call
from balf.ranks.latency.table import (
    LatencyCost,
    LatencyMetric,
    LatencyTable,
    LayerLatency,
    allowed_ranks,
    layer_keep_ratio,
    with_latency_costs,
)

__all__ = [
    "LatencyCost",
    "LatencyMetric",
    "LatencyTable",
    "LayerLatency",
    "allowed_ranks",
    "layer_keep_ratio",
    "measure_latency",
    "time_call",
    "with_latency_costs",
]
