"""Calibration statistics containers: one layer's Gram matrices, a model's, and their file format.

:class:`Statistics` is what :func:`balf.collect_statistics` returns: per layer a
:class:`LayerStatistics` (float64 Gram matrices ``(G, S, S)`` and the counts the cost model
needs), saved and loaded as a plain ``weights_only`` state dict and summed over processes with
``torch.distributed``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from balf._version import __version__
from balf.errors import StatisticsError
from balf.io.atomic import atomic_torch_save
from balf.io.hashing import tensor_digest
from balf.layers.dispatch import dense_weight
from balf.layers.geometry import Side

__all__ = ["LayerStatistics", "Statistics", "check_finite", "check_statistics"]

_FORMAT = 1


@dataclass
class LayerStatistics:
    """Accumulated second moments of one layer.

    Attributes:
        side: ``"input"`` (``gram`` = ``Σ X_gᵀX_g``, (G, D, D)) or ``"output"``
            (``Σ Y_gᵀY_g``, (G, K, K)).
        gram: float64 Gram matrices, ``(G, S, S)``.
        rows: rows ``N`` accumulated per group over all calls (output vectors seen).
        calls: number of forward calls seen.
        output_shape: per-sample output shape of the last call, e.g. ``(C_out, H, W)``.
        weight_digest: digest of the layer's weight when collected (detects a changed model).
    """

    side: Side
    gram: Tensor
    rows: int = 0
    calls: int = 0
    output_shape: tuple[int, ...] = ()
    weight_digest: str = ""


@dataclass
class Statistics:
    """Per-layer calibration statistics of a model, plus what the cost model needs.

    Attributes:
        layers: statistics by module name.
        num_samples: calibration samples seen (sum of batch sizes).
        example_input: one calibration input, ``(1, ...)`` on the CPU, for FLOP counting (a
            tuple of positional inputs for ``(args, kwargs)`` batches, the batch itself cut to
            one sample with a ``forward`` callable).
        example_kwargs: keyword inputs of that example (``(args, kwargs)`` batches).
        version: library version that collected them.
    """

    layers: dict[str, LayerStatistics]
    num_samples: int
    example_input: Tensor | None = None
    version: str = __version__
    extra: dict = field(default_factory=dict)
    example_kwargs: dict = field(default_factory=dict)

    def rows_per_sample(self, name: str) -> float:
        """Output vectors per sample (``H_out·W_out`` for a conv, tokens for a Linear)."""
        return self.layers[name].rows / self.num_samples

    def to(self, device: torch.device | str) -> Statistics:
        """Move the Gram matrices to ``device`` (in place); returns ``self``."""
        for st in self.layers.values():
            st.gram = st.gram.to(device)
        return self

    def check_finite(self) -> None:
        """Raise :class:`StatisticsError` naming the first layer with NaN/Inf statistics."""
        check_finite(self.layers)

    def to_state(self) -> dict:
        """A ``torch.save``-able dict of plain types and tensors (``weights_only``-loadable)."""
        return {
            "format": _FORMAT,
            "version": self.version,
            "num_samples": self.num_samples,
            "example_input": self.example_input,
            "extra": dict(self.extra),
            "example_kwargs": dict(self.example_kwargs),
            "layers": {
                name: {
                    "side": st.side,
                    "gram": st.gram.cpu(),
                    "rows": st.rows,
                    "calls": st.calls,
                    "output_shape": list(st.output_shape),
                    "weight_digest": st.weight_digest,
                }
                for name, st in self.layers.items()
            },
        }

    @classmethod
    def from_state(cls, state: dict) -> Statistics:
        """Inverse of :meth:`to_state`."""
        if state.get("format") != _FORMAT:
            raise StatisticsError(
                f"statistics file format {state.get('format')!r} is not {_FORMAT}; recollect them"
            )
        layers = {
            name: LayerStatistics(
                side=d["side"],
                gram=d["gram"],
                rows=int(d["rows"]),
                calls=int(d["calls"]),
                output_shape=tuple(d["output_shape"]),
                weight_digest=d["weight_digest"],
            )
            for name, d in state["layers"].items()
        }
        return cls(
            layers=layers,
            num_samples=int(state["num_samples"]),
            example_input=state["example_input"],
            version=state["version"],
            extra=dict(state.get("extra", {})),
            example_kwargs=dict(state.get("example_kwargs", {})),
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write to ``path`` atomically (temporary file + rename)."""
        atomic_torch_save(self.to_state(), Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Statistics:
        """Read statistics written by :meth:`save` (``weights_only=True``)."""
        state = torch.load(Path(path), map_location=map_location, weights_only=True)
        return cls.from_state(state)

    def all_reduce(self) -> Statistics:
        """Sum the statistics over the processes of ``torch.distributed`` (in place).

        Every process must have collected the same layers on its own shard of the data; after
        the call each holds the statistics of the whole calibration set.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        counts = torch.tensor(
            [self.num_samples]
            + [st.rows for st in self.layers.values()]
            + [st.calls for st in self.layers.values()],
            dtype=torch.float64,
        )
        device = next(iter(self.layers.values())).gram.device if self.layers else "cpu"
        counts = counts.to(device)
        dist.all_reduce(counts)
        for st in self.layers.values():
            dist.all_reduce(st.gram)
        n = len(self.layers)
        values = counts.cpu().tolist()
        self.num_samples = int(round(values[0]))
        for i, st in enumerate(self.layers.values()):
            st.rows = int(round(values[1 + i]))
            st.calls = int(round(values[1 + n + i]))
        return self


def check_finite(layers: Mapping[str, LayerStatistics]) -> None:
    """Raise :class:`StatisticsError` naming the first layer whose Gram matrices hold NaN/Inf."""
    for name, st in layers.items():
        if not torch.isfinite(st.gram).all():
            raise StatisticsError(
                f"layer {name!r}: calibration statistics contain NaN or Inf. Check the "
                "calibration inputs for NaN/Inf and, for float16 models, overflow "
                "(collect statistics in float32 or bfloat16)."
            )


def check_statistics(stats: Statistics, targets: Mapping[str, nn.Module]) -> None:
    """Check that ``stats`` fit the layers ``targets`` (by module name).

    Raises:
        StatisticsError: a layer has no entry, its weight changed since the statistics were
            collected, or a Gram matrix holds NaN/Inf.
    """
    for name, module in targets.items():
        if name not in stats.layers:
            raise StatisticsError(
                f"the statistics have no entry for layer {name!r} (they cover "
                f"{len(stats.layers)} layers); collect them with the same `layers`"
            )
        if stats.layers[name].weight_digest != tensor_digest(dense_weight(module)):
            raise StatisticsError(
                f"the statistics of layer {name!r} were collected with different weights; "
                "recollect them for this model"
            )
    stats.check_finite()
