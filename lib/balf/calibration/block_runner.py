"""The two passes of block-by-block calibration for one :class:`balf.Compressor`.

:class:`BlockRunner` runs the allocation pass (ranks from the original model's statistics,
collected one block at a time) and the propagation pass (factors from the inputs the compressed
blocks produce) that :mod:`balf.calibration.block_by_block` describes; :func:`find_blocks` picks
the chain of blocks when the strategy names none.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from balf._device import model_device
from balf._eval_mode import eval_mode
from balf.calibration.batches import split_batches
from balf.calibration.block_inputs import (
    BlockInputs,
    ChainInfo,
    capture_first_inputs,
    check_chain,
    run_block,
    run_tail,
)
from balf.calibration.collect import _Accumulator
from balf.counting.flops import count_params
from balf.decomposition import LayerDecomposition, decompose_layer
from balf.errors import BALFError
from balf.layers.attention import temporarily_unpacked
from balf.layers.dispatch import geometry_of
from balf.layers.install import install_factorized
from balf.ranks.configs import CompressionConfig, LayerCandidate
from balf.ranks.costs import LayerCost
from balf.report import Report
from balf.report.build import fill_totals, layer_report

if TYPE_CHECKING:
    from balf.calibration.block_by_block import BlockByBlock
    from balf.compressor import Compressor

__all__ = ["BlockRunner", "find_blocks"]

log = logging.getLogger(__name__)


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
    """Runs :class:`BlockByBlock` for one :class:`balf.Compressor` (keeps the allocation pass)."""

    def __init__(self, strategy: BlockByBlock, compressor: Compressor) -> None:
        data = compressor._data
        if data is not None and not isinstance(data, Tensor) and iter(data) is data:
            raise BALFError(
                "block-by-block calibration reads the calibration data several times: pass a "
                "re-iterable (a list, a DataLoader or a tensor), not a one-shot iterator"
            )
        if compressor._data is None:
            raise BALFError(
                "block-by-block calibration needs calibration data (it collects statistics "
                "block by block on the propagated inputs), not precomputed Statistics"
            )
        self.strategy = strategy
        self.c = compressor
        self.blocks = _resolve_blocks(compressor.model, strategy.blocks, compressor.targets)
        self.members = _members(self.blocks, compressor.targets)
        self.chain: ChainInfo | None = None
        self._candidates: list[LayerCandidate] | None = None
        self._outside: dict[str, LayerDecomposition] = {}  # prefix layers, kept on the CPU
        self.timings: dict[str, float] = {}
        self.device = model_device(compressor.model)
        ad = strategy.activation_device
        self.activation_device = torch.device(ad) if ad is not None else self.device

    # -- plumbing ------------------------------------------------------------------------------

    def _bar(self, desc: str) -> Callable[[Iterator], Iterator]:
        return lambda it: tqdm(it, desc=desc, unit="batch", disable=not self.c.progress)

    def _data_kwargs(self) -> dict[str, Any]:
        return {
            "forward": self.c.forward,
            "batch_size": self.c.batch_size,
            "max_batches": self.c.max_batches,
        }

    def _check_chain(self, model: nn.Module) -> ChainInfo:
        first = next(iter(split_batches(self.c._data, self.c.batch_size, self.c.max_batches)), None)
        if first is None:
            raise BALFError("the calibration data is empty: pass at least one non-empty batch")
        return check_chain(model, self.blocks, self.c.targets, first, self.c.forward)

    def _statistics(
        self, model: nn.Module, names: Sequence[str], run: Callable[[], Any]
    ) -> dict[str, Any]:
        """Statistics of layers ``names`` of ``model`` while ``run()`` runs (forward hooks)."""
        side = self.c.side
        modules = {n: model.get_submodule(n) for n in names}
        accs = {
            n: _Accumulator(n, m, side or geometry_of(m).preferred_side())
            for n, m in modules.items()
        }
        handles = [modules[n].register_forward_hook(accs[n]) for n in names]
        try:
            result = run()
        finally:
            for h in handles:
                h.remove()
        for n, acc in accs.items():
            if acc.stats.calls == 0:
                raise BALFError(
                    f"layer {n!r} was never called during calibration; exclude it via `layers=`"
                )
            if not torch.isfinite(acc.stats.gram).all():
                raise BALFError(f"layer {n!r}: calibration statistics contain NaN or Inf")
        return {"stats": {n: a.stats for n, a in accs.items()}, "result": result}

    def _decompose(
        self, model: nn.Module, names: Sequence[str], stats: dict
    ) -> Iterator[tuple[str, LayerDecomposition]]:
        """``(name, decomposition)`` one layer at a time; each Gram matrix is freed once
        decomposed, and each decomposition once the caller moves on (peak: one layer's)."""
        device = self.strategy.decomposition_device
        for n in names:
            st = stats[n]
            if device is not None:
                st.gram = st.gram.to(device)
            dec = decompose_layer(model.get_submodule(n), st)
            st.gram = None
            yield n, dec

    # -- pass 1: ranks from the original model ---------------------------------------------------

    def candidates(self) -> list[LayerCandidate]:
        """Every chosen layer's cost model and energy curve, from the original model's statistics
        collected block by block (computed on first use)."""
        if self._candidates is not None:
            return self._candidates
        start = time.perf_counter()
        with temporarily_unpacked(self.c.model):  # attention projections are layers
            self._candidates = self._allocation_pass()
        self.timings["allocation_pass"] = time.perf_counter() - start
        return self._candidates

    def _allocation_pass(self) -> list[LayerCandidate]:
        model, targets = self.c.model, self.c.targets
        self.chain = self._check_chain(model)
        prefix = [n for n in self.chain.prefix if not self._in_block(n)]
        energies: dict[str, Tensor] = {}
        rows: dict[str, float] = {}

        captured = self._statistics(model, prefix, lambda: self._capture(model))
        inputs: BlockInputs = captured["result"]
        n = inputs.num_samples
        decs = self._decompose(model, prefix, captured["stats"])
        for name, dec in decs:
            energies[name] = dec.energies().cpu().numpy()
            rows[name] = captured["stats"][name].rows / n
            self._outside[name] = _to_cpu(dec)
        hidden, inputs = inputs.hidden, inputs.with_hidden([])  # one set of hidden states held
        for block_name, block in self.blocks.items():
            step = inputs.with_hidden(hidden)
            members = self.members[block_name]
            got = self._statistics(model, members, self._runs(block, block_name, step))
            for name, dec in self._decompose(model, members, got["stats"]):
                energies[name] = dec.energies().cpu().numpy()
                rows[name] = got["stats"][name].rows / n
            hidden = got["result"]
            del got, step
        suffix = [t for t in targets if t not in energies]
        if suffix:
            got = self._statistics(
                model, suffix, functools.partial(self._tail, model, hidden, inputs)
            )
            for name, dec in self._decompose(model, suffix, got["stats"]):
                energies[name] = dec.energies().cpu().numpy()
                rows[name] = got["stats"][name].rows / n
                self._outside[name] = None  # recalibrated on propagated inputs in pass 2
        self._num_samples = n
        return [
            LayerCandidate(name, LayerCost(geometry_of(m), rows[name]), energies[name])
            for name, m in targets.items()
        ]

    def _runs(
        self, block: nn.Module, name: str, inputs: BlockInputs, keep: bool = True
    ) -> Callable[[], list]:
        return lambda: run_block(block, name, inputs, self.activation_device, keep)

    def _in_block(self, name: str) -> bool:
        return any(name in m for m in self.members.values())

    def _capture(self, model: nn.Module) -> BlockInputs:
        first = model.get_submodule(next(iter(self.blocks)))
        return capture_first_inputs(
            model,
            first,
            self.c._data,
            activation_device=self.activation_device,
            progress_bar=self._bar("block inputs"),
            tuple_output=self.chain.tuple_output,
            **self._data_kwargs(),
        )

    def _tail(self, model: nn.Module, hidden: list[Tensor], inputs: BlockInputs) -> None:
        run_tail(model, list(self.blocks), hidden, inputs, self.c._data, **self._data_kwargs())

    # -- pass 2: factors on propagated inputs ----------------------------------------------------

    def compress(self, config: CompressionConfig, inplace: bool) -> tuple[nn.Module, Report]:
        """Compress with ``config``'s ranks (from pass 1), factors from propagated inputs."""
        c = self.c
        candidates = self.candidates()
        baseline = c._baseline_counts()
        start = time.perf_counter()
        ranks, allocation = config.select_ranks(candidates)
        allocation_time = time.perf_counter() - start
        by_name = {cand.name: (cand, r) for cand, r in zip(candidates, ranks, strict=True)}
        replaced = {name for name, (cand, r) in by_name.items() if cand.cost.is_cheaper(r)}
        out = c._copy_model(replaced, inplace)
        shapes = c._layer_shapes() if replaced else {}
        report = Report(config=config.to_dict(), mode=config.mode, skipped=dict(c.skipped))
        energies: dict[str, Any] = {}

        def install(decs: Iterable[tuple[str, LayerDecomposition]]) -> None:
            for name, dec in decs:
                cand, rank = by_name[name]
                energies[name] = dec.energies().cpu().numpy()
                factorized = name in replaced
                if factorized:  # a block's layer: never the whole model
                    dense, aliases = c.targets[name], c.aliases[name]
                    install_factorized(out, name, dense, dec, rank, aliases, shapes.get(name))
                report.layers[name] = layer_report(cand, rank, factorized, dec, energies, config)

        start = time.perf_counter()
        with temporarily_unpacked(out):  # projections not replaced stay packed after
            blocks_out = {name: out.get_submodule(name) for name in self.blocks}
            prefix = {n: d for n, d in self._outside.items() if d is not None}
            install((n, _to_device(d, self.device)) for n, d in prefix.items())
            inputs = self._capture(out)
            hidden, inputs = inputs.hidden, inputs.with_hidden([])  # one set of hidden states held
            for block_name, block in blocks_out.items():
                step = inputs.with_hidden(hidden)
                members = self.members[block_name]
                # statistics of the uncompressed block (its outputs are not needed)
                run = self._runs(block, block_name, step, keep=False)
                got = self._statistics(out, members, run)
                install(self._decompose(out, members, got["stats"]))
                del got
                hidden = run_block(block, block_name, step, self.activation_device)
                del step
            suffix = [n for n, d in self._outside.items() if d is None]
            if suffix:
                run = functools.partial(self._tail, out, hidden, inputs)
                got = self._statistics(out, suffix, run)
                install(self._decompose(out, suffix, got["stats"]))
        report.layers = {n: report.layers[n] for n in c.targets}  # model order
        has_flops = True
        fill_totals(report, candidates, ranks, allocation, config, has_flops)
        propagation = time.perf_counter() - start
        report.model_params_before, report.model_flops_before = baseline
        report.model_params_after = count_params(out)
        if report.model_flops_before is not None:
            with eval_mode(out):
                report.model_flops_after = c._count_flops(out)
        report.timings = {
            "allocation_pass": self.timings.get("allocation_pass", 0.0),
            "allocation": allocation_time,
            "propagation_pass": propagation,
        }
        self.timings["allocation_pass"] = 0.0  # counted once, by the first compression
        report.strategy = {**self.strategy.to_dict(), "blocks": list(self.blocks)}
        log.info(report.summary())
        return out, report


def _to_cpu(dec: LayerDecomposition) -> LayerDecomposition:
    return _to_device(dec, torch.device("cpu"))


def _to_device(dec: LayerDecomposition, device: torch.device) -> LayerDecomposition:
    state = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in dec.to_state().items()}
    return LayerDecomposition.from_state(state)
