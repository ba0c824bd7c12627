"""Hartigan's k-means, as Model Folding clusters channels (numpy, float64, seeded).

Hartigan's method moves one point at a time to the cluster that lowers the total inertia most,
accounting for the centroid shift its move causes: moving ``x`` from cluster ``a`` (size
``n_a > 1``) to ``b`` changes the inertia by

    n_b / (n_b + 1) · ‖x − μ_b‖²  −  n_a / (n_a − 1) · ‖x − μ_a‖²,

and a move is made only when this is negative, so the inertia decreases strictly at every move
and no cluster ever becomes empty. Settings of the Model Folding paper: a random balanced
initial partition, 10 restarts keeping the lowest inertia, at most 20 passes over the points,
stopping once fewer than 2% of the points moved in a pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from balf.errors import BALFError

__all__ = ["KMeansResult", "balanced_partition", "hartigan_kmeans", "inertia"]


@dataclass(frozen=True)
class KMeansResult:
    """Outcome of :func:`hartigan_kmeans`.

    Attributes:
        labels: cluster of every point, ``(n,)`` int64 in ``[0, k)``; every cluster non-empty.
        inertia: ``Σ_i ‖x_i − μ_{labels_i}‖²`` of ``labels``.
        initial_inertia: inertia of the initial partition of the restart that was kept.
        passes: passes over the points made by that restart.
    """

    labels: np.ndarray
    inertia: float
    initial_inertia: float
    passes: int


def balanced_partition(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """A random partition of ``n`` points into ``k`` clusters whose sizes differ by at most one.

    Returns:
        ``(n,)`` int64 labels in ``[0, k)``.
    """
    return rng.permutation(np.arange(n, dtype=np.int64) % k)


def inertia(x: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared distances of the points ``x`` ``(n, d)`` to their cluster means."""
    x = np.asarray(x, dtype=np.float64)
    total = 0.0
    for c in np.unique(labels):
        members = x[labels == c]
        total += float(((members - members.mean(axis=0)) ** 2).sum())
    return total


def _isometric_coordinates(x: np.ndarray) -> np.ndarray:
    """``x`` ``(n, d)`` with ``d > n`` expressed in ``n`` coordinates with the same distances.

    The centred points ``X`` span at most ``n`` dimensions; with ``X Xᵀ = U Λ Uᵀ`` the
    coordinates ``U Λ^½`` ``(n, n)`` have the same Gram matrix, hence the same pairwise and
    point-to-centroid distances, so Hartigan's moves are unchanged while each distance costs
    ``O(n)`` instead of ``O(d)``.
    """
    if x.shape[1] <= x.shape[0]:
        return x
    centred = x - x.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred @ centred.T)
    return eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))


def _hartigan_pass_loop(
    x: np.ndarray, labels: np.ndarray, k: int, max_passes: int, min_moved: float
) -> tuple[np.ndarray, int]:
    """Hartigan moves from the partition ``labels`` ``(n,)``; returns new labels and passes."""
    n = x.shape[0]
    labels = labels.copy()
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, labels, x)
    centers = sums / counts[:, None]
    center_sq = (centers**2).sum(axis=1)
    x_sq = (x**2).sum(axis=1)
    passes = 0
    for passes in range(1, max_passes + 1):  # noqa: B007 - the count is returned
        moved = 0
        for i in range(n):
            a = labels[i]
            if counts[a] == 1:
                continue
            xi = x[i]
            dist = np.maximum(x_sq[i] - 2.0 * (centers @ xi) + center_sq, 0.0)
            add_cost = counts / (counts + 1.0) * dist
            add_cost[a] = np.inf
            b = int(np.argmin(add_cost))
            # decide on exactly computed distances (the expansion above only ranks candidates)
            remove_gain = counts[a] / (counts[a] - 1.0) * float(((xi - centers[a]) ** 2).sum())
            add = counts[b] / (counts[b] + 1.0) * float(((xi - centers[b]) ** 2).sum())
            if add >= remove_gain:
                continue
            sums[a] -= xi
            sums[b] += xi
            counts[a] -= 1
            counts[b] += 1
            for c in (a, b):
                centers[c] = sums[c] / counts[c]
                center_sq[c] = centers[c] @ centers[c]
            labels[i] = b
            moved += 1
        if moved < min_moved * n:
            break
    return labels, passes


def hartigan_kmeans(
    x: np.ndarray,
    k: int,
    *,
    restarts: int = 10,
    max_passes: int = 20,
    min_moved: float = 0.02,
    seed: int | np.random.Generator = 0,
    init: np.ndarray | None = None,
) -> KMeansResult:
    """Cluster the rows of ``x`` into ``k`` groups with Hartigan's k-means.

    Args:
        x: points ``(n, d)`` (any float dtype; computed in float64).
        k: number of clusters, ``1 <= k``; ``k >= n`` gives every point its own cluster.
        restarts: random balanced initial partitions tried; the lowest inertia is kept.
        max_passes: passes over the points per restart.
        min_moved: stop a restart once fewer than ``min_moved · n`` points moved in a pass.
        seed: seed (or generator) of the initial partitions.
        init: start from this partition ``(n,)`` (labels ``0..k-1``, all used) instead of
            random ones; ``restarts`` is then ignored.

    Returns:
        A :class:`KMeansResult` whose ``inertia`` never exceeds its ``initial_inertia``.

    Example:
        >>> pts = np.array([[0.0], [0.1], [5.0], [5.1]])
        >>> lab = hartigan_kmeans(pts, 2, seed=0).labels  # the two obvious pairs
        >>> bool(lab[0] == lab[1] != lab[2] == lab[3])
        True
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise BALFError(f"k-means expects points of shape (n, d), got {x.shape}")
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 or n < 1:
        raise BALFError(f"k-means needs k >= 1 clusters and n >= 1 points, got k={k}, n={n}")
    if k >= n:
        labels = np.arange(n, dtype=np.int64)
        return KMeansResult(labels, 0.0, 0.0, 0)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if init is not None:
        init = np.asarray(init, dtype=np.int64)
        if init.shape != (n,) or set(np.unique(init).tolist()) != set(range(k)):
            raise BALFError(f"init must be (n,) labels using each of 0..{k - 1}")
        starts = [init]
    else:
        if restarts < 1:
            raise BALFError(f"restarts must be >= 1, got {restarts}")
        starts = [balanced_partition(n, k, rng) for _ in range(restarts)]
    coords = _isometric_coordinates(x)
    best: KMeansResult | None = None
    for start in starts:
        labels, passes = _hartigan_pass_loop(coords, start, k, max_passes, min_moved)
        result = KMeansResult(labels, inertia(x, labels), inertia(x, start), passes)
        if best is None or result.inertia < best.inertia:
            best = result
    assert best is not None
    return best
