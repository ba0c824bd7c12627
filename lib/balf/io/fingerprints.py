"""Content fingerprints for cache keys: calibration data and statistics, digested.

* :func:`data_fingerprint` — tensor data is digested whole; for an iterable only the first batch
  is read (and given back through :class:`PeekedIterable`), with its length, its dataset's
  length, ``max_batches`` and the ``forward`` callable's source;
* :func:`statistics_digest` — what decompositions read from :class:`Statistics` (the Gram
  matrices ``(G, S, S)``, sides and row counts of the chosen layers, and the sample count;
  read by attribute, so this module needs no import of :mod:`balf.calibration`).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from torch import Tensor

from balf.io.hashing import code_digest, object_digest, update_with_tensor

__all__ = ["PeekedIterable", "data_fingerprint", "statistics_digest"]


class PeekedIterable:
    """An iterable whose first batch was already read: yields it, then the rest; iterated
    again, it iterates ``source`` anew (a re-iterable such as a ``DataLoader``) or yields
    nothing (``source=None``: a one-shot iterator, consumed)."""

    def __init__(
        self, first: Any, rest: Iterator, length: int | None, source: Iterable | None = None
    ) -> None:
        self._pending: Iterator | None = itertools.chain([first], rest)
        self._length = length
        self._source = source

    def __iter__(self) -> Iterator:
        if self._pending is not None:
            items, self._pending = self._pending, None
            return items
        return iter(self._source) if self._source is not None else iter(())

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("length unknown")
        return self._length


def _length(obj: Any) -> int | None:
    try:
        return len(obj)
    except TypeError:
        return None


def data_fingerprint(
    data: Iterable | Tensor,
    batch_size: int = 64,
    max_batches: int | None = None,
    forward: Callable | None = None,
) -> tuple[str, Iterable | Tensor]:
    """A digest identifying calibration data, and the data to use afterwards.

    Tensor data is digested whole. For an iterable only the first batch is read (the returned
    iterable yields it again, then the rest): the digest covers every tensor of that batch, the
    iterable's length and its ``dataset``'s length when defined, ``max_batches`` and the source
    of ``forward``.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(f"max_batches={max_batches} forward=".encode())
    h.update((code_digest(forward) if forward is not None else "none").encode())
    if isinstance(data, Tensor):
        h.update(f" tensor batch_size={batch_size} ".encode())
        update_with_tensor(h, data)
        return h.hexdigest(), data
    length = _length(data)
    dataset_length = _length(getattr(data, "dataset", None))
    h.update(f" iterable length={length} dataset={dataset_length} ".encode())
    it = iter(data)
    source = None if it is data else data  # re-iterable: later passes iterate it anew
    first = next(it, None)
    if first is None:
        return h.hexdigest(), []
    h.update(object_digest(first).encode())
    return h.hexdigest(), PeekedIterable(first, it, length, source)


def statistics_digest(stats: Any, names: Iterable[str]) -> str:
    """Digest of what decompositions read from ``stats`` (a :class:`balf.Statistics`) for the
    layers ``names``."""
    return object_digest(
        {
            "num_samples": stats.num_samples,
            "layers": [
                (n, stats.layers[n].side, stats.layers[n].gram, stats.layers[n].rows) for n in names
            ],
        }
    )
