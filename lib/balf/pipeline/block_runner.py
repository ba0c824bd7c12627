"""The two passes of block-by-block calibration for one :class:`balf.Compressor`.

:class:`BlockRunner` runs the allocation pass (ranks from the original model's statistics,
collected one block at a time) and the propagation pass (factors from the inputs the compressed
blocks produce) that :mod:`balf.pipeline.block_by_block` describes; :func:`find_blocks` picks
the chain of blocks when the strategy names none.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from balf.calibration.block_inputs import (
    BlockInputs,
    ChainInfo,
    capture_first_inputs,
    check_chain,
    run_block,
    run_tail,
)
from balf.calibration.layer_pass import HookedPass, hooked_pass, sum_over_processes
from balf.decomposition import LayerDecomposition, decompose_layer
from balf.errors import BALFError
from balf.layers.attention import temporarily_unpacked
from balf.layers.dispatch import geometry_of
from balf.pipeline.context import CompressionContext
from balf.pipeline.strategy import InstallPlan, WholeModelRunner
from balf.ranks.costs import LayerCandidate, LayerCost

__all__ = ["BlockOptions", "BlockRunner", "find_blocks"]


class BlockOptions(Protocol):
    """What the runner reads of :class:`balf.BlockByBlock` (its fields, see there)."""

    blocks: Sequence[str] | None
    activation_device: str | None
    decomposition_device: str | None

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
        size = sum(
            m.weight.numel() for t, m in targets.items() if t.startswith(prefix) and t != name
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


def _members(blocks: dict[str, nn.Module], targets: dict[str, nn.Module]) -> dict[str, list[str]]:
    """The target layers of each block, by block name."""
    out = {b: [] for b in blocks}
    for t in targets:
        for b in blocks:
            if t.startswith(b + ".") or t == b:
                out[b].append(t)
                break
    return out


class BlockRunner:
    """Runs :class:`balf.BlockByBlock` on one :class:`CompressionContext` (keeps the allocation
    pass).

    The runner of :mod:`balf.pipeline.strategy`'s protocol: :meth:`candidates` is the allocation
    pass, :meth:`decompositions_for_install` the propagation pass.
    """

    def __init__(self, strategy: BlockOptions, context: CompressionContext) -> None:
        data = context.data.data
        if data is None:
            raise BALFError(
                "block-by-block calibration needs calibration data (it collects statistics "
                "block by block on the propagated inputs), not precomputed Statistics"
            )
        self.strategy = strategy
        self.context = context
        self.blocks = _resolve_blocks(context.model, strategy.blocks, context.targets)
        self.chain: ChainInfo | None = None
        self._candidates: list[LayerCandidate] | None = None
        self._outside: dict[str, LayerDecomposition] = {}  # prefix layers, kept on the CPU
        self._rows: dict[str, int] = {}
        self._num_samples = 0
        self.device = context.device
        ad = strategy.activation_device
        self.activation_device = torch.device(ad) if ad is not None else self.device

    # -- plumbing ------------------------------------------------------------------------------

    def _members(self, block: str) -> list[str]:
        """The chosen layers inside ``block`` (in model order)."""
        return _members(self.blocks, self.context.targets)[block]

    def _bar(self, desc: str) -> Callable[[Iterator], Iterator]:
        progress = self.context.data.progress
        return lambda it: tqdm(it, desc=desc, unit="batch", disable=not progress)

    def _data_kwargs(self) -> dict[str, Any]:
        d = self.context.data
        return {"forward": d.forward, "batch_size": d.batch_size, "max_batches": d.max_batches}

    def _check_chain(self, model: nn.Module) -> ChainInfo:
        batch = next(iter(self.context.calibration_batches()), None)
        if batch is None:
            raise BALFError("the calibration data is empty: pass at least one non-empty batch")
        return check_chain(
            model, self.blocks, self.context.targets, batch, self.context.data.forward
        )

    def _statistics(
        self, model: nn.Module, names: Sequence[str], run: Callable[[], Any]
    ) -> HookedPass:
        """Statistics of layers ``names`` of ``model`` while ``run()`` runs (the one hook path
        of every strategy: :func:`balf.calibration.layer_pass.hooked_pass`)."""
        modules = {n: model.get_submodule(n) for n in names}
        return hooked_pass(
            modules, run, side=self.context.data.side,
            rerun_example=self.context.rerun_example(model),
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

    def _record(self, got: HookedPass) -> list[str]:
        """Skip the layers ``got`` says were never called; the called layers' names."""
        if got.skipped:
            self.context.skip(got.skipped)
        for name, st in got.layers.items():
            self._rows[name] = st.rows
        return list(got.layers)

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
        model = self.context.model
        self.chain = self._check_chain(model)
        prefix = [n for n in self.chain.prefix if not self._in_block(n)]
        energies: dict[str, Tensor] = {}

        captured = self._statistics(model, prefix, lambda: self._capture(model))
        inputs: BlockInputs = captured.result
        n = self._num_samples = sum_over_processes(inputs.num_samples)
        for name, dec in self._decompose(model, self._record(captured), captured):
            energies[name] = dec.energies().cpu().numpy()
            self._outside[name] = _to_cpu(dec)
        hidden, inputs = inputs.hidden, inputs.with_hidden([])  # one set of hidden states held
        for block_name, block in self.blocks.items():
            step = inputs.with_hidden(hidden)
            got = self._statistics(
                model, self._members(block_name), self._runs(block, block_name, step)
            )
            for name, dec in self._decompose(model, self._record(got), got):
                energies[name] = dec.energies().cpu().numpy()
            hidden = got.result
            del got, step
        suffix = [t for t in self.context.targets if t not in energies]
        if suffix:
            got = self._statistics(
                model, suffix, functools.partial(self._tail, model, hidden, inputs)
            )
            for name, dec in self._decompose(model, self._record(got), got):
                energies[name] = dec.energies().cpu().numpy()
                self._outside[name] = None  # recalibrated on propagated inputs in pass 2
        return [
            LayerCandidate(name, LayerCost(geometry_of(m), self._rows[name] / n), energies[name])
            for name, m in self.context.targets.items()
        ]

    def _runs(
        self, block: nn.Module, name: str, inputs: BlockInputs, keep: bool = True
    ) -> Callable[[], list]:
        return lambda: run_block(block, name, inputs, self.activation_device, keep)

    def _in_block(self, name: str) -> bool:
        return any(name == b or name.startswith(b + ".") for b in self.blocks)

    def _capture(self, model: nn.Module) -> BlockInputs:
        first = model.get_submodule(next(iter(self.blocks)))
        return capture_first_inputs(
            model,
            first,
            self.context.data.data,
            activation_device=self.activation_device,
            progress_bar=self._bar("block inputs"),
            tuple_output=self.chain.tuple_output,
            **self._data_kwargs(),
        )

    def _tail(self, model: nn.Module, hidden: list[Tensor], inputs: BlockInputs) -> None:
        run_tail(
            model, list(self.blocks), hidden, inputs, self.context.data.data, **self._data_kwargs()
        )

    # -- pass 2: factors on propagated inputs ----------------------------------------------------

    def decompositions_for_install(
        self, out: nn.Module, plan: InstallPlan
    ) -> Iterator[tuple[str, LayerDecomposition]]:
        """The propagation pass on ``out`` (a copy of the model, or the model itself): the
        layers before the first block (their whole-model factors), then each block's layers
        calibrated on the outputs of the blocks already installed, then the layers after the
        last block on the last compressed block's outputs."""
        if not plan.activation_aware:
            yield from WholeModelRunner(self.context).decompositions_for_install(out, plan)
            return
        self.candidates(True)
        with self.context.timed("propagation_pass"), temporarily_unpacked(out):
            # projections not replaced stay packed after
            blocks_out = {name: out.get_submodule(name) for name in self.blocks}
            for name, dec in self._outside.items():
                if dec is not None and name in plan.ranks:
                    yield name, _to_device(dec, self.device)
            inputs = self._capture(out)
            hidden, inputs = inputs.hidden, inputs.with_hidden([])  # one set of hidden states held
            for block_name, block in blocks_out.items():
                step = inputs.with_hidden(hidden)
                members = [m for m in self._members(block_name) if m in plan.ranks]
                # statistics of the uncompressed block (its outputs are not needed)
                got = self._statistics(
                    out, members, self._runs(block, block_name, step, keep=False)
                )
                _check_all_called(got)
                yield from self._decompose(out, members, got)
                del got
                hidden = run_block(block, block_name, step, self.activation_device)
                del step
            suffix = [n for n, d in self._outside.items() if d is None and n in plan.ranks]
            if suffix:
                run = functools.partial(self._tail, out, hidden, inputs)
                got = self._statistics(out, suffix, run)
                _check_all_called(got)
                yield from self._decompose(out, suffix, got)

    # -- what the report reads -------------------------------------------------------------------

    def calibration_rows(self) -> dict[str, int]:
        return dict(self._rows)

    def calibration_samples(self) -> int:
        return self._num_samples

    def describe(self) -> dict[str, Any]:
        return {**self.strategy.to_dict(), "blocks": list(self.blocks)}

    def layer_notes(self) -> dict[str, str | None]:
        return {}


def _check_all_called(got: HookedPass) -> None:
    if got.skipped:
        raise BALFError(
            f"layers {sorted(got.skipped)} ran in the allocation pass but not on the compressed "
            "model's propagated inputs; exclude them (exclude=[...])"
        )


def _to_cpu(dec: LayerDecomposition) -> LayerDecomposition:
    return _to_device(dec, torch.device("cpu"))


def _to_device(dec: LayerDecomposition, device: torch.device) -> LayerDecomposition:
    state = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in dec.to_state().items()}
    return LayerDecomposition.from_state(state)
