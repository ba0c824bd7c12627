"""Calibration strategies: where the candidates' energies and the installed factors come from.

:meth:`balf.Compressor.compress` is one pipeline — candidates, rank selection, a copy of the
model, installation of the factorized layers, the report and the counts — and a
:class:`CalibrationStrategy` supplies its two calibration-dependent steps through a runner
(:class:`StrategyRunner`, made once per compressor by :meth:`CalibrationStrategy.runner`):

* ``candidates(activation_aware)`` — every chosen layer's cost model and energy curve, which the
  rank rule allocates over;
* ``decompositions_for_install(out, plan)`` — ``(name, decomposition)`` of every chosen layer in
  the order the layers must be installed in ``out``: the compressor installs each yielded layer
  (at the plan's rank, where it is replaced) before it asks for the next, so a strategy may run
  ``out``'s already compressed part to calibrate what follows (block by block does).

Built in: :class:`WholeModel` (the default: one pass over the data, every layer's statistics at
once) and :class:`balf.BlockByBlock` (:mod:`balf.pipeline.block_by_block`). Data-free configs
(``activation_aware=False``) have nothing to calibrate and run as :class:`WholeModel` under any
strategy.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from torch import Tensor, nn

from balf.decomposition import LayerDecomposition
from balf.errors import BALFError
from balf.layers.dispatch import geometry_of
from balf.pipeline.context import CompressionContext
from balf.ranks.costs import LayerCandidate, LayerCost

__all__ = [
    "CalibrationStrategy",
    "InstallPlan",
    "StrategyRunner",
    "WholeModel",
    "WholeModelRunner",
    "refuse_one_shot_data",
]


@dataclass(frozen=True)
class InstallPlan:
    """What the rank rule decided, as a strategy's runner sees it.

    Attributes:
        activation_aware: whether the factors whiten the activations (else plain SVD).
        ranks: the chosen rank of every chosen layer, by name, in candidate order.
        replaced: the layers that get a factorized replacement (low-rank is strictly cheaper).
    """

    activation_aware: bool
    ranks: dict[str, int]
    replaced: frozenset[str]

    @classmethod
    def of(
        cls, candidates: Sequence[LayerCandidate], ranks: Sequence[int], activation_aware: bool
    ) -> InstallPlan:
        """The plan of ``ranks`` (1-based, one per candidate)."""
        by_name = {c.name: int(r) for c, r in zip(candidates, ranks, strict=True)}
        replaced = frozenset(
            c.name for c, r in zip(candidates, ranks, strict=True) if c.cost.is_cheaper(r)
        )
        return cls(activation_aware, by_name, replaced)


def refuse_one_shot_data(context: CompressionContext, what: str) -> None:
    """Raise when the calibration data is a one-shot iterator (``what`` reads it several times).

    Raises:
        BALFError: naming ``what`` and the fix.
    """
    data = context.data.data
    if data is not None and not isinstance(data, Tensor) and iter(data) is data:
        raise BALFError(
            f"{what} reads the calibration data several times: pass a re-iterable (a tensor, a "
            "list or a DataLoader), not a one-shot iterator"
        )


class StrategyRunner(Protocol):
    """Runs one strategy for one compressor; keeps what every compression reuses."""

    def candidates(self, activation_aware: bool) -> list[LayerCandidate]:
        """Every chosen layer's cost model and energy curve ``(R,)``, in model order."""
        ...

    def decompositions_for_install(
        self, out: nn.Module, plan: InstallPlan
    ) -> Generator[tuple[str, LayerDecomposition], nn.Module | None, None]:
        """``(name, decomposition)`` of every layer of ``plan``, in installation order; the
        caller installs each in ``out`` (where ``plan.replaced`` has it) before it asks for the
        next, and sends back the installed module (``None`` when the layer stays dense)."""
        ...

    def calibration_rows(self) -> Mapping[str, int]:
        """Rows (output vectors) each layer saw in the statistics its ranks come from."""
        ...

    def calibration_samples(self) -> int:
        """Calibration samples those statistics were collected on."""
        ...

    def describe(self) -> dict[str, Any] | None:
        """The strategy as the report records it (``None``: whole-model)."""
        ...

    def layer_notes(self) -> Mapping[str, str | None]:
        """A note for a layer's report entry, by name, where the strategy has one."""
        ...


class CalibrationStrategy:
    """Base class of calibration strategies (frozen dataclasses, JSON-serialisable).

    Attributes:
        uses_cache: whether its statistics can come from a :class:`balf.Cache` (they cannot
            when they depend on the ranks, as block by block's do).
    """

    uses_cache: ClassVar[bool] = True

    def check(self, context: CompressionContext) -> None:
        """Refuse, with a clear :class:`balf.BALFError`, options this strategy cannot run
        (called when the compressor is made; default: none)."""

    def runner(self, context: CompressionContext) -> StrategyRunner:
        """The object that runs this strategy on ``context`` (made once per compressor)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """``{"type": <class name>, ...}``, JSON-serialisable."""
        raise NotImplementedError


@dataclass(frozen=True)
class WholeModel(CalibrationStrategy):
    """Whole-model calibration (the default): one pass over the calibration data collects every
    chosen layer's statistics at once, and every layer is calibrated on the original model's
    activations (method §2). Statistics and decompositions can be cached.

    Example:
        >>> small, report = balf.compress(model, data, balf.BALFConfig(0.5),
        ...                               strategy=balf.WholeModel())
    """

    def runner(self, context: CompressionContext) -> WholeModelRunner:
        return WholeModelRunner(context)

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__}


class WholeModelRunner:
    """:class:`WholeModel` on a context: the context's whole-model decompositions."""

    def __init__(self, context: CompressionContext) -> None:
        self.context = context

    def candidates(self, activation_aware: bool) -> list[LayerCandidate]:
        ctx = self.context
        decompositions = ctx.decompositions(activation_aware)
        rows_per_sample = ctx.rows_per_sample()  # may skip layers the example never calls
        out = []
        for name, module in ctx.targets.items():
            rows = rows_per_sample[name] if rows_per_sample is not None else None
            energies = decompositions[name].energies().cpu().numpy()
            out.append(LayerCandidate(name, LayerCost(geometry_of(module), rows), energies))
        return out

    def decompositions_for_install(
        self, out: nn.Module, plan: InstallPlan
    ) -> Iterator[tuple[str, LayerDecomposition]]:
        decompositions = self.context.decompositions(plan.activation_aware)
        for name in plan.ranks:
            yield name, decompositions[name]

    def calibration_rows(self) -> dict[str, int]:
        return {n: st.rows for n, st in self.context.statistics.layers.items()}

    def calibration_samples(self) -> int:
        return self.context.statistics.num_samples

    def describe(self) -> None:
        return None

    def layer_notes(self) -> dict[str, str | None]:
        return {}
