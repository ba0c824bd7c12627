"""Random inputs of the budgeted allocator (helpers, not tests; numpy only)."""

from __future__ import annotations

import numpy as np

__all__ = ["random_problem"]


def random_problem(seed: int, n_layers: int = 4, max_rank: int = 6, min_rank: int = 1):
    """Random allocation inputs: per layer a normalised energy curve and a capped cost curve."""
    rng = np.random.default_rng(seed)
    energies, costs = [], []
    for _ in range(n_layers):
        r = int(rng.integers(min_rank, max_rank + 1))
        spectrum = np.sort(rng.exponential(size=r))[::-1]
        e = np.cumsum(spectrum) / spectrum.sum()
        e[-1] = 1.0
        per_rank = float(rng.uniform(1, 10))
        dense = per_rank * r * float(rng.uniform(0.6, 1.0))
        costs.append(np.minimum(per_rank * np.arange(1, r + 1), dense))
        energies.append(e)
    return energies, costs
