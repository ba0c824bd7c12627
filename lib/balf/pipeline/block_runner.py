"""The two passes of block-by-block calibration for one :class:`balf.Compressor`.

:class:`BlockRunner` runs the allocation pass (ranks from the original model's statistics,
collected one block at a time) and the propagation pass (factors from the inputs the compressed
blocks produce) that :mod:`balf.pipeline.block_by_block` describes; :func:`find_blocks` picks
the chain of blocks when the strategy names none.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from balf.calibration.accumulator import AccumulatorFactory
from balf.calibration.block_inputs import Carried, ChainRecord, record_chain, run_block
from balf.calibration.chain import ChainInfo, check_chain
from balf.calibration.layer_pass import HookedPass, hooked_pass, sum_over_processes
from balf.calibration.padding import PaddingMask
from balf.decomposition import LayerDecomposition, decompose_layer, layer_energies
from balf.errors import BALFError
from balf.layers.attention import temporarily_unpacked
from balf.layers.dispatch import geometry_of
from balf.pipeline.block_refit import (
    FIRST_NOTE,
    SHARED_NOTE,
    TAIL_NOTE,
    Outcome,
    PairedRuns,
    first_block_inputs,
    paired_block_runs,
    refit_members,
    same_batches,
)
from balf.pipeline.context import CompressionContext
from balf.pipeline.strategy import InstallPlan, WholeModelRunner
from balf.ranks.costs import LayerCandidate, LayerCost
from balf.refit import AnchoredRefit

__all__ = ["BlockOptions", "BlockRunner", "find_blocks"]


class BlockOptions(Protocol):
    """What the runner reads of :class:`balf.BlockByBlock` (its fields, see there)."""

    blocks: Sequence[str] | None
    activation_device: str | None
    decomposition_device: str | None
    refit: AnchoredRefit | None

    def to_dict(self) -> dict[str, Any]: ...


def find_blocks(model: nn.Module, targets: dict[str, nn.Module]) -> list[str]:
    """The children of the ``nn.ModuleList``/``nn.Sequential`` holding most target weights.

    Among containers with at least two children, the one whose children hold the most weight
    entries of ``targets`` (ties: the outermost) gives the blocks: a transformer's decoder or
    encoder ``layers``, MobileNetV2's ``features``, a ViT's ``encoder.layers``. Models whose blocks
    are not in one container (torchvision ResNets: ``layer1`` … ``layer4``) should name them.

    Raises:
        BALFError: no such container holds a target layer.
    """
    best, best_size = None, 0
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) < 2:
            continue
        prefix = f"{name}." if name else ""
        size = sum(  # by geometry: reading a parametrized weight could advance its state
            geometry_of(m).dense_params
            for t, m in targets.items()
            if t.startswith(prefix) and t != name
        )
        if size > best_size:
            best, best_size = name, size
    if best is None:
        raise BALFError(
            "found no nn.ModuleList/nn.Sequential of blocks holding layers to compress; pass "
            "BlockByBlock(blocks=[...]) with the module names of the blocks"
        )
    prefix = f"{best}." if best else ""
    return [f"{prefix}{child}" for child, _ in model.get_submodule(best).named_children()]


def _resolve_blocks(
    model: nn.Module, names: Sequence[str] | None, targets: dict[str, nn.Module]
) -> dict[str, nn.Module]:
    names = list(names) if names is not None else find_blocks(model, targets)
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise BALFError(f"unknown block {name!r}: the model has no such module")
    if len(set(names)) != len(names):
        raise BALFError(f"a block is named twice in {names}")
    for a in names:
        for b in names:
            if a != b and (a == "" or b.startswith(a + ".")):
                raise BALFError(f"block {b!r} is inside block {a!r}; name blocks side by side")
    return {name: modules[name] for name in names}


class BlockRunner:
    """Runs :class:`balf.BlockByBlock` on one :class:`CompressionContext` (keeps the allocation
    pass).

    The runner of :mod:`balf.pipeline.strategy`'s protocol: :meth:`candidates` is the allocation
    pass, :meth:`decompositions_for_install` the propagation pass.

    The allocation pass computes energy curves only (:func:`balf.decomposition.layer_energies`),
    except for the layers it keeps decomposed on the CPU: those before the first block and those
    shared by several places (installed first, from the original model's statistics) and, without
    a refit, the first block's layers (the propagation pass installs them as they are when no
    layer before the first block is replaced: the block's inputs are then the allocation pass's).
    """

    #: Whether the allocation pass keeps the first block's decompositions for the propagation
    #: pass to install (bit-identical, one block's statistics and decompositions fewer). Off:
    #: measured at hidden 2048, 8 × 512 tokens (``block_scale``), on it 8.93× a forward pass and
    #: 1.62 GiB above the weights (commit 2ad3ca5), off 9.19× and 1.52 GiB (0f16506): no time
    #: saving beyond the run-to-run spread, for one block of float64 decompositions held.
    _reuse_first_block: ClassVar[bool] = False

    def __init__(self, strategy: BlockOptions, context: CompressionContext) -> None:
        if context.data.data is None:
            raise BALFError(
                "block-by-block calibration needs calibration data (it collects statistics "
                "block by block on the propagated inputs), not precomputed Statistics"
            )
        self.strategy = strategy
        self.context = context
        self.blocks = _resolve_blocks(context.model, strategy.blocks, context.targets)
        self.chain: ChainInfo | None = None
        self.padding = PaddingMask()
        self._candidates: list[LayerCandidate] | None = None
        self._first: dict[str, LayerDecomposition] = {}  # installed first, kept on the CPU
        # the first block's decompositions (on the CPU) and the devices they were computed on,
        # until the first propagation pass is done with the block
        self._first_block: dict[str, tuple[LayerDecomposition, torch.device]] = {}
        self._rows: dict[str, int] = {}
        self._num_samples = 0
        self.outcome: Outcome = {}  # the refit's per-layer outcome (report)
        self.device = context.device
        ad = strategy.activation_device
        self.activation_device = torch.device(ad) if ad is not None else self.device

    # -- plumbing ------------------------------------------------------------------------------

    def _bar(self, desc: str) -> Callable[[Iterator], Iterator]:
        progress = self.context.data.progress
        return lambda it: tqdm(it, desc=desc, unit="batch", disable=not progress)

    def _statistics(
        self,
        model: nn.Module,
        names: Sequence[str],
        run: Callable[[], Any],
        accumulator: AccumulatorFactory | None = None,
    ) -> HookedPass:
        """Statistics of layers ``names`` of ``model`` while ``run()`` runs (the one hook path
        of every strategy: :func:`balf.calibration.layer_pass.hooked_pass`)."""
        modules = {n: model.get_submodule(n) for n in names}
        return hooked_pass(
            modules, run, side=self.context.data.side, padding=self.padding,
            rerun_example=self.context.rerun_example(model), accumulator=accumulator,
        )  # fmt: skip

    def _decompose(
        self, model: nn.Module, names: Sequence[str], got: HookedPass
    ) -> Iterator[tuple[str, LayerDecomposition]]:
        """``(name, decomposition)`` one layer at a time; each Gram matrix is freed once
        decomposed, and each decomposition once the caller moves on (peak: one layer's)."""
        device = self.strategy.decomposition_device
        for n in names:
            st = got.layers[n]
            if device is not None:
                st.gram = st.gram.to(device)
            dec = decompose_layer(model.get_submodule(n), st)
            st.gram = None
            yield n, dec

    def _energies(
        self,
        model: nn.Module,
        names: Sequence[str],
        got: HookedPass,
        keep: Collection[str] = (),
        kept: Callable[[str, LayerDecomposition], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """The energy curves ``(R,)`` of layers ``names``, one layer at a time (each Gram freed
        once used): the layers in ``keep`` decomposed (:func:`decompose_layer`, their
        decompositions handed to ``kept(name, decomposition)``), the others from the eigenvalues
        alone (:func:`layer_energies`)."""
        device, out = self.strategy.decomposition_device, {}
        for n in names:
            st = got.layers[n]
            if device is not None:
                st.gram = st.gram.to(device)
            module = model.get_submodule(n)
            if n in keep:
                dec = decompose_layer(module, st)
                kept(n, dec)
                energies = dec.energies()
                del dec
            else:
                energies = layer_energies(module, st)
            st.gram = None
            out[n] = energies.cpu().numpy()
        return out

    def _keep_first(self, name: str, dec: LayerDecomposition) -> None:
        self._first[name] = _to_device(dec, torch.device("cpu"))

    def _keep_first_block(self, name: str, dec: LayerDecomposition) -> None:
        self._first_block[name] = (_to_device(dec, torch.device("cpu")), dec.sigma2.device)

    def _record(self, got: HookedPass) -> list[str]:
        """Skip the layers ``got`` says were never called; the called layers' names."""
        if got.skipped:
            self.context.skip(got.skipped)
        for name, st in got.layers.items():
            self._rows[name] = st.rows
        return list(got.layers)

    def _record_chain(
        self, model: nn.Module, digests: list[str] | None = None, *, stop_at_last: bool = False
    ) -> ChainRecord:
        """Every block's inputs on every batch (one forward pass of ``model``; ``digests``: the
        batches must be those of an earlier pass, see :func:`same_batches`; ``stop_at_last``:
        each pass stops at the last block, when nothing after it is needed)."""
        ctx = self.context
        batches = ctx.calibration_batches()
        if digests is not None:
            batches = same_batches(batches, digests)
        return record_chain(
            model, {n: model.get_submodule(n) for n in self.blocks},
            self._bar("block inputs")(batches), ctx.run, ctx.batch_size_of,
            activation_device=self.activation_device, padding=self.padding,
            stop_at_last=stop_at_last,
        )  # fmt: skip

    def _forward_all(self, model: nn.Module) -> None:
        """One forward pass of ``model`` over the calibration data (statistics of the tail)."""
        ctx = self.context
        for batch in self._bar("tail")(ctx.calibration_batches()):
            self.padding.set(batch)
            try:
                ctx.run(model, batch)
            finally:
                self.padding.current = None

    def _runs(
        self, block: nn.Module, position: int, record: ChainRecord, carried: list, keep: bool
    ) -> Callable[[], list]:
        name = list(self.blocks)[position]
        return lambda: run_block(
            block, position, name, record, carried, self.activation_device,
            padding=self.padding, keep=keep,
        )  # fmt: skip

    # -- pass 1: ranks from the original model ---------------------------------------------------

    def candidates(self, activation_aware: bool = True) -> list[LayerCandidate]:
        """Every chosen layer's cost model and energy curve, from the original model's statistics
        collected block by block (computed on first use; data-free: as whole-model)."""
        if not activation_aware:
            return WholeModelRunner(self.context).candidates(False)
        if self._candidates is not None:
            self.context.timings.setdefault("allocation_pass", 0.0)  # counted once
            return self._candidates
        with self.context.timed("allocation_pass"), temporarily_unpacked(self.context.model):
            self._candidates = self._allocation_pass()
        return self._candidates

    def _allocation_pass(self) -> list[LayerCandidate]:
        ctx, model = self.context, self.context.model
        batch = next(iter(ctx.calibration_batches()), None)
        if batch is None:
            raise BALFError("the calibration data is empty: pass at least one non-empty batch")
        with torch.no_grad():
            self.chain = check_chain(model, self.blocks, ctx.targets, batch, ctx.run)
        chain, refit, energies = self.chain, self.strategy.refit, {}
        # one forward pass: every block's inputs, and the statistics of the layers outside the
        # blocks (before, after, shared by several places) on the original model
        outside = [*chain.prefix, *chain.shared, *chain.tail]
        got = self._statistics(model, outside, lambda: self._record_chain(model))
        record: ChainRecord = got.result
        n = self._num_samples = sum_over_processes(record.num_samples)
        installed_first = {*chain.prefix, *chain.shared}
        energies.update(
            self._energies(model, self._record(got), got, installed_first, self._keep_first)
        )
        carried = record.first_inputs()
        for position, (block_name, block) in enumerate(self.blocks.items()):
            run = self._runs(block, position, record, carried, keep=True)
            got = self._statistics(model, chain.members[block_name], run)
            # the first block's decompositions, for the propagation pass (not with a refit,
            # which fits the block on other statistics)
            reuse = position == 0 and refit is None and self._reuse_first_block
            keep = chain.members[block_name] if reuse else ()
            energies.update(
                self._energies(model, self._record(got), got, keep, self._keep_first_block)
            )
            carried = got.result
            del got
        return [
            LayerCandidate(name, LayerCost(geometry_of(m), self._rows[name] / n), energies[name])
            for name, m in ctx.targets.items()
        ]

    # -- pass 2: factors on propagated inputs ----------------------------------------------------

    def decompositions_for_install(
        self, out: nn.Module, plan: InstallPlan
    ) -> Iterator[tuple[str, LayerDecomposition]]:
        """The propagation pass on ``out`` (a copy of the model, or the model itself): the
        layers before the first block and those shared by several places (their whole-model
        factors), then each block's layers calibrated on the outputs of the blocks already
        installed, then the layers after the last block on the compressed model's forward pass.

        The first block's layers come from the allocation pass when none of the layers before it
        is replaced and there is no refit (:meth:`_first_block_reused`): its inputs, statistics
        and decompositions are those of the allocation pass, and the block runs once, compressed,
        for its outputs. The kept decompositions are freed once the first block is done, used or
        not (a later compression by the same compressor recalibrates the block)."""
        if not plan.activation_aware:
            yield from WholeModelRunner(self.context).decompositions_for_install(out, plan)
            return
        self.candidates(True)
        chain, refit = self.chain, self.strategy.refit
        self.outcome = {}
        with self.context.timed("propagation_pass"), temporarily_unpacked(out):
            # projections not replaced stay packed after
            dense, digests = None, None
            if refit is not None and plan.replaced.intersection(self._first):
                # the refit's dense side: the first block's inputs before anything is installed
                dense, digests = self._dense_first_inputs(out)
            for name, dec in self._first.items():
                if name in plan.ranks:
                    if refit is not None and name in plan.replaced:
                        self._note(name, FIRST_NOTE if name in chain.prefix else SHARED_NOTE)
                    yield name, _to_device(dec, self.device)
            # only the blocks' inputs are read: the passes stop at the last block (the tail's
            # statistics come from a forward pass of the compressed model below)
            record = self._record_chain(out, digests, stop_at_last=True)
            carried = record.first_inputs()
            if dense is None:
                dense = record.first_inputs()
            for position, name in enumerate(self.blocks):
                block = out.get_submodule(name)
                members = [m for m in chain.members[name] if m in plan.ranks]
                if refit is not None:
                    dense = yield from self._refit_block(out, position, members, record, dense,
                                                         carried, plan)  # fmt: skip
                elif position == 0 and self._first_block_reused(plan, members):
                    for m in members:
                        dec, device = self._first_block.pop(m)
                        yield m, _to_device(dec, device)
                else:
                    # statistics of the uncompressed block (its outputs are not needed)
                    run = self._runs(block, position, record, carried, keep=False)
                    got = self._statistics(out, members, run)
                    _check_all_called(got)
                    yield from self._decompose(out, members, got)
                    del got
                # used once or not at all: freed before the later (and larger) installations
                self._first_block.clear()
                carried = self._runs(block, position, record, carried, keep=True)()
            del record, carried, dense
            tail = [n for n in chain.tail if n in plan.ranks]
            if tail:
                got = self._statistics(out, tail, lambda: self._forward_all(out))
                _check_all_called(got)
                if refit is not None:
                    for name in tail:
                        if name in plan.replaced:
                            self._note(name, TAIL_NOTE, got.layers[name].rows)
                yield from self._decompose(out, tail, got)

    def _first_block_reused(self, plan: InstallPlan, members: Sequence[str]) -> bool:
        """Whether the first block's layers ``members`` are installed from the allocation pass:
        nothing before the block (nor shared with another place) is replaced, so the block's
        inputs and statistics are the allocation pass's, whose decompositions are kept."""
        return (
            self._reuse_first_block
            and self.strategy.refit is None
            and plan.replaced.isdisjoint([*self.chain.prefix, *self.chain.shared])
            and all(m in self._first_block for m in members)
        )

    # -- the anchored refit (balf.pipeline.block_refit) ----------------------------------------

    def _dense_first_inputs(self, out: nn.Module) -> tuple[Carried, list[str]]:
        """The first block's inputs on ``out`` before anything is installed, and the digests
        of the batches (the recording pass must see the same)."""
        first = out.get_submodule(next(iter(self.blocks)))
        batches = self._bar("dense inputs")(self.context.calibration_batches())
        return first_block_inputs(out, first, batches, self.context.run, self.activation_device)

    def _refit_block(
        self,
        out: nn.Module,
        position: int,
        members: list[str],
        record: ChainRecord,
        dense: Carried,
        carried: Carried,
        plan: InstallPlan,
    ) -> Generator[tuple[str, LayerDecomposition], nn.Module | None, Carried]:
        """One block's members refitted (:func:`refit_members`) from paired runs of the
        uncompressed block on the dense and the propagated hidden states; returns the next
        block's dense hidden states."""
        name = list(self.blocks)[position]
        block = out.get_submodule(name)
        runs = PairedRuns(self.padding)
        got = self._statistics(
            out, members, lambda: paired_block_runs(block, position, name, record, dense,
                                                    carried, runs, self.activation_device),
            accumulator=runs.accumulator,
        )  # fmt: skip
        _check_all_called(got)
        dense = got.result
        yield from refit_members(
            out, got, members, plan.ranks, plan.replaced, self.strategy.refit, self.outcome,
            side=self.context.data.side, device=self.strategy.decomposition_device,
        )  # fmt: skip
        return dense

    def _note(self, name: str, note: str, rows: int | None = None) -> None:
        rows = self._rows.get(name, 0) if rows is None else rows
        self.outcome[name] = {"refit": False, "rows": rows, "note": note, "bias_shift": None}

    # -- what the report reads -------------------------------------------------------------------

    def calibration_rows(self) -> dict[str, int]:
        return dict(self._rows)

    def calibration_samples(self) -> int:
        return self._num_samples

    def describe(self) -> dict[str, Any]:
        described = {**self.strategy.to_dict(), "blocks": list(self.blocks)}
        if self.strategy.refit is not None:
            described["layers"] = {n: dict(o) for n, o in self.outcome.items()}
        return described

    def layer_notes(self) -> dict[str, str | None]:
        return {n: o["note"] for n, o in self.outcome.items()}


def _check_all_called(got: HookedPass) -> None:
    if got.skipped:
        raise BALFError(
            f"layers {sorted(got.skipped)} ran in the allocation pass but not on the compressed "
            "model's propagated inputs; exclude them (exclude=[...])"
        )


def _to_device(dec: LayerDecomposition, device: torch.device) -> LayerDecomposition:
    state = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in dec.to_state().items()}
    return LayerDecomposition.from_state(state)
