"""Block by block with the anchored refit (:class:`balf.AnchoredRefit`): each block's layers
fitted on their propagated inputs ``X'`` towards the dense model's outputs ``XW``.

The propagation pass of :class:`balf.BlockByBlock` carries, beside the hidden states of the
compressed blocks (``X'`` side), those of the uncompressed model (``X`` side): the first block's
dense inputs are captured on the original model (layers before the chain dense), every later
block's are the previous block's outputs on its dense inputs. For each block and each batch the
still uncompressed block runs twice, on the dense hidden state then on the propagated one; a
:class:`CrossAccumulator` per member layer keeps the inputs of each call of the first run and
pairs them, call by call, with the second run's, adding the paired rows to the layer's
:class:`balf.refit.CrossStatistics` (``C' = X'ᵀX'``, ``M = X'ᵀX``, row sums). The accumulators
are registered through :func:`balf.calibration.layer_pass.hooked_pass` like every statistics
hook (``prepend=True``, padding tokens left out, summed over the processes of
``torch.distributed``, uncalled layers and NaN checks), their four statistics packed in one
``(G, D, 2D + 2)`` float64 tensor.

:func:`refit_members` then gives each member its decomposition: the anchored refit where the rows
determine the fit (:meth:`balf.AnchoredRefit.determined`), else today's block-by-block fit on
``X'`` (its statistics follow exactly from ``C'``: the input Gram ``C'``, or the output Gram
``WᵀC'W``), with a note for the report.

Memory: one block's paired statistics (``2·D²`` float64 numbers per layer and group), the dense
and the propagated hidden states at one block boundary, one batch's inputs of the block's layers.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from balf._eval_mode import eval_mode
from balf.calibration.batches import tensors_of
from balf.calibration.block_inputs import Carried, ChainRecord, run_block
from balf.calibration.layer_pass import HookedPass
from balf.calibration.padding import PaddingMask
from balf.calibration.statistics import LayerStatistics
from balf.decomposition import LayerDecomposition, decompose_layer
from balf.errors import BALFError
from balf.io.hashing import tensor_digest, update_with_tensor
from balf.layers.dispatch import dense_weight, geometry_of, input_rows, weight_matrices
from balf.layers.geometry import Side
from balf.refit import AnchoredRefit, CrossStatistics, anchored_decomposition, correct_bias

__all__ = [
    "CrossAccumulator",
    "PairedRuns",
    "batch_digest",
    "cross_statistics_of",
    "first_block_inputs",
    "refit_members",
    "same_batches",
]

Outcome = dict[str, dict[str, Any]]
"""``{layer: {"refit": bool, "rows": N, "note": str | None, "bias_shift": float | None}}``."""

FIRST_NOTE = (
    "before the first block: its inputs are the dense model's (X' = X), where every β gives "
    "these whole-model factors (no refit)"
)
SHARED_NOTE = "called in several places: whole-model factors, installed first (no refit)"
TAIL_NOTE = (
    "after the last block: fitted on the compressed model's inputs as without the refit "
    "(target X'W, β = 0; no refit)"
)


def cross_statistics_of(st: LayerStatistics) -> CrossStatistics:
    """The :class:`CrossStatistics` packed in ``st.gram`` ``(G, D, 2D + 2)`` (views, no copy):
    columns ``[0, D)`` hold ``C'``, ``[D, 2D)`` ``M``, ``2D`` the sum of ``x'``, ``2D + 1`` the
    sum of ``x``."""
    g, d = st.gram, st.gram.shape[1]
    return CrossStatistics(g[..., :d], g[..., d : 2 * d], g[..., 2 * d], g[..., 2 * d + 1], st.rows)


class PairedRuns:
    """The pairing of a block's two runs on one batch: which run is going on, and the inputs the
    dense run gave each member layer, per call, until the propagated run takes them.

    Args:
        padding: the padding mask the propagated run sets (rows of padding tokens left out).
    """

    def __init__(self, padding: PaddingMask | None = None) -> None:
        self.phase = _Phase(padding)
        self.accumulators: dict[str, CrossAccumulator] = {}

    @property
    def padding(self) -> PaddingMask | None:
        return self.phase.padding

    def run(self, dense: bool) -> None:
        """Tell the hooks which run comes next: the dense (``True``) or the propagated."""
        self.phase.dense = dense

    def accumulator(self, name: str, module: nn.Module, side: Side) -> CrossAccumulator:
        """The :data:`~balf.calibration.accumulator.AccumulatorFactory` of the member layers."""
        self.accumulators[name] = CrossAccumulator(name, module, self.phase)
        return self.accumulators[name]

    def check_paired(self) -> None:
        """Raise unless every dense call of the batch found its propagated call."""
        for acc in self.accumulators.values():
            if acc.pending:
                raise BALFError(
                    f"layer {acc.name!r} was called {len(acc.pending)} more time(s) on the dense "
                    "hidden state than on the propagated one; the refit needs the same calls"
                )


@dataclass
class _Phase:
    """What the hooks read: the padding mask, and whether the dense run is going on."""

    padding: PaddingMask | None
    dense: bool = True


class CrossAccumulator:
    """Forward hook of one member layer (the :class:`~balf.calibration.accumulator.Accumulator`
    protocol): during the dense run it keeps each call's input ``X`` ``(*, D)``; during the
    propagated run it pairs each call's input ``X'`` with the dense call of the same rank and adds
    their rows to the statistics.

    Attributes:
        stats: ``gram`` ``(G, D, 2D + 2)`` float64 (see :func:`cross_statistics_of`), rows and
            calls of the propagated run.
    """

    def __init__(self, name: str, module: nn.Module, phase: _Phase) -> None:
        geo = geometry_of(module)
        w = dense_weight(module)
        size = geo.in_dim
        gram = torch.zeros(geo.groups, size, 2 * size + 2, dtype=torch.float64, device=w.device)
        self.name, self.phase = name, phase
        self.stats = LayerStatistics("input", gram, weight_digest=tensor_digest(w))
        self.cross = cross_statistics_of(self.stats)
        self.pending: deque[tuple[Tensor, int | None]] = deque()

    def __call__(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        x = inputs[0].detach()
        if self.phase.dense:
            self.pending.append((x, None if x.is_inference() else x._version))
            return
        if not self.pending:
            raise BALFError(
                f"layer {self.name!r} was called more times on the propagated hidden state than "
                "on the dense one; the refit needs the same calls"
            )
        dense, version = self.pending.popleft()
        if version is not None and dense._version != version:
            raise BALFError(
                f"the input of layer {self.name!r} was modified in place after the layer ran "
                "(e.g. `x += ...` on it); the block-by-block refit keeps it until the block's "
                "second run: make that operation out of place, or calibrate without the refit"
            )
        if dense.shape != x.shape:
            raise BALFError(
                f"layer {self.name!r} got inputs of shape {tuple(dense.shape)} on the dense and "
                f"{tuple(x.shape)} on the propagated hidden state of the same batch"
            )
        padding = self.phase.padding
        real = padding.rows(module, output) if padding is not None else None
        if real is not None:  # (B, L): the rows of real tokens
            x, dense = x[real], dense[real]
        for prop_rows, dense_rows in zip(input_rows(module, x), input_rows(module, dense),
                                         strict=True):  # fmt: skip
            self.cross.add(prop_rows, dense_rows)
        st = self.stats
        st.calls += 1
        st.rows = self.cross.rows
        st.output_shape = tuple(output.shape[1:])


def paired_block_runs(
    block: nn.Module,
    position: int,
    name: str,
    record: ChainRecord,
    dense: Carried,
    propagated: Carried,
    runs: PairedRuns,
    activation_device: torch.device,
) -> Carried:
    """Run block number ``position`` (uncompressed) on every batch: on its dense hidden state,
    then on its propagated one (``runs`` tells the hooks which; only the first run when the
    block has no layer to refit), see the module docstring.

    Returns:
        Per batch, the dense outputs the next block takes (the next dense hidden state).
    """
    out: Carried = []
    with torch.no_grad():
        for entry, x, x_prop in zip(record.batches, dense, propagated, strict=True):
            one = ChainRecord([entry])
            runs.run(dense=True)
            out += run_block(block, position, name, one, [x], activation_device)
            if not runs.accumulators:  # no layer to refit in this block
                continue
            runs.run(dense=False)
            run_block(block, position, name, one, [x_prop], activation_device,
                      padding=runs.padding, keep=False)  # fmt: skip
            runs.check_paired()
    return out


class _Stop(Exception):
    """Ends a forward pass once the first block's input is captured."""


def batch_digest(batch: Any) -> str:
    """A digest of every tensor of a calibration batch (dtype, shape, bytes), in order."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors_of(batch):
        update_with_tensor(h, t)
    return h.hexdigest()


def first_block_inputs(
    model: nn.Module,
    block: nn.Module,
    batches: Iterable[Any],
    run: Callable[[nn.Module, Any], Any],
    activation_device: torch.device,
) -> tuple[Carried, list[str]]:
    """The first block's input on every batch, each forward pass of ``model`` stopped there.

    Args:
        model: the model before anything is installed (the layers before the chain dense).
        block: its first block (called with the hidden state as first positional argument).
        batches: the calibration batches, on the model's device.
        run: ``run(model, batch)`` calls the model.
        activation_device: where the hidden states are kept.

    Returns:
        ``([{0: hidden (B, …)} per batch], [batch_digest per batch])``.
    """
    seen: list[Tensor] = []

    def capture(module: nn.Module, args: tuple) -> None:
        seen.append(args[0].detach().to(activation_device))
        raise _Stop

    carried: Carried = []
    digests: list[str] = []
    handle = block.register_forward_pre_hook(capture, prepend=True)
    try:
        with eval_mode(model), torch.no_grad():
            for batch in batches:
                try:
                    run(model, batch)
                except _Stop:
                    pass
                if not seen:
                    raise BALFError("the first block did not run on a calibration batch")
                carried.append({0: seen.pop()})
                digests.append(batch_digest(batch))
    finally:
        handle.remove()
    return carried, digests


def same_batches(batches: Iterable[Any], digests: Sequence[str]) -> Iterator[Any]:
    """``batches``, checked batch by batch against the ``digests`` of an earlier pass.

    Raises:
        BALFError: the data gave other batches, or in another order (a shuffling loader).
    """
    count = 0
    for count, batch in enumerate(batches, 1):
        if count > len(digests) or batch_digest(batch) != digests[count - 1]:
            break
        yield batch
    else:
        if count == len(digests):
            return
    raise BALFError(
        "the calibration data gave other batches on a second pass (a shuffling DataLoader?); "
        "the block-by-block refit pairs the dense and the compressed model's inputs batch by "
        "batch: pass a list, a tensor or a DataLoader with shuffle=False"
    )


def _todays_fit(
    module: nn.Module, cross: CrossStatistics, side: Side | None, st: LayerStatistics
) -> LayerDecomposition:
    """Block by block's own fit on ``X'``: the input Gram ``C'`` or the output Gram ``WᵀC'W``
    (the layer's cheaper side unless ``side``), decomposed as without the refit."""
    side = side or geometry_of(module).preferred_side()
    c = cross.prop_gram
    if side == "output":
        w = weight_matrices(module).to(device=c.device, dtype=torch.float64)
        gram = w.transpose(1, 2) @ c @ w
    else:
        gram = c.contiguous()
    return decompose_layer(module, LayerStatistics(side, gram, st.rows, st.calls, st.output_shape))


def refit_members(
    out: nn.Module,
    got: HookedPass,
    members: Sequence[str],
    ranks: dict[str, int],
    replaced: frozenset[str],
    refit: AnchoredRefit,
    outcome: Outcome,
    *,
    side: Side | None = None,
    device: str | None = None,
) -> Generator[tuple[str, LayerDecomposition], nn.Module | None, None]:
    """Yield ``(name, decomposition)`` of each member of one block, in order (module docstring);
    is sent back the installed module (the bias correction shifts its bias). Each member's
    statistics are freed once it is installed.

    Args:
        out: the model being compressed (the block still uncompressed).
        got: the block's paired statistics (:class:`CrossAccumulator`'s).
        ranks: the rank of every layer; ``replaced``: those installed factorized (the others
            keep today's fit, for the report).
        outcome: filled with each factorized member's outcome (:data:`Outcome`).
        side: the statistics side of the compressor (``None``: each layer's cheaper side).
        device: where the statistics are decomposed (``None``: where they are).
    """
    for name in members:
        st = got.layers.pop(name)
        if device is not None:
            st.gram = st.gram.to(device)
        cross, module = cross_statistics_of(st), out.get_submodule(name)
        if name not in replaced:
            yield name, _todays_fit(module, cross, side, st)
            continue
        if not refit.determined(cross):
            d = cross.prop_gram.shape[-1]
            outcome[name] = {"refit": False, "rows": st.rows, "bias_shift": None,
                             "note": f"block-by-block fit kept (no refit): {st.rows} calibration "
                                     f"rows do not determine a fit of {d} inputs"}  # fmt: skip
            yield name, _todays_fit(module, cross, side, st)
            continue
        cross.check_finite(name)
        w, max_rank = weight_matrices(module), geometry_of(module).max_rank
        dec = anchored_decomposition(w, cross, refit.beta, refit.ridge, max_rank)
        small = yield name, dec
        shift = None
        if refit.bias_correction and small is not None:
            shift = correct_bias(small, w, dec, ranks[name], cross, refit.beta)
        outcome[name] = {"refit": True, "rows": st.rows, "note": None, "bias_shift": shift}
        del st, cross, dec
