"""Ranks: the rank-rule configs (:mod:`.configs`, their modes in :mod:`.modes`), the per-layer
rules (:mod:`.rules`), the budgeted allocator (:mod:`.allocation`) and the budget metrics
(:mod:`.costs`: params and FLOPs; :mod:`.latency`: measured latency)."""
