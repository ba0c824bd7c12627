"""Layer-sequential propagation-aware refit: each factorized layer in forward order.

The ranks come from the whole-model allocation (the dense model's spectra). Then, for each layer
to factorize, in the order the forward pass first calls them: the dense model and the model being
compressed (every earlier layer already factorized) run side by side on the calibration batches;
a hook on the layer in each gives the paired inputs ``X`` and ``X'`` (im2col rows for a conv),
whose statistics (:class:`balf.refit.CrossStatistics`) give the layer's anchored refit
(:func:`balf.refit.anchored_decomposition`), which is installed before the next layer is
fitted. A forward pass stops once the layer's last call of the pass has been seen.

Cost: for ``L`` layers, about ``L`` forward passes of each model over the calibration samples
used (half of one, on average, thanks to the early stop). Memory: one layer's ``(G, D, D)``
statistics and one batch's inputs of that layer. Suited to CNNs and small models; block by
block with :class:`balf.refit.AnchoredRefit` is the form for transformers.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from balf._device import model_device
from balf._eval_mode import eval_mode
from balf.calibration.batches import as_call
from balf.calibration.padding import PaddingMask
from balf.decomposition import LayerDecomposition
from balf.errors import BALFError
from balf.layers.attention import temporarily_unpacked
from balf.layers.dispatch import geometry_of, input_rows, weight_matrices
from balf.pipeline.context import CompressionContext
from balf.pipeline.sensitivity import probe_batches
from balf.pipeline.strategy import (
    CalibrationStrategy,
    InstallPlan,
    WholeModelRunner,
    refuse_one_shot_data,
)
from balf.refit import AnchoredRefit, CrossStatistics, anchored_decomposition, correct_bias

__all__ = ["LayerSequential", "LayerSequentialRunner", "call_order", "refit_in_order"]


@dataclass(frozen=True)
class LayerSequential(CalibrationStrategy):
    """Calibration strategy: whole-model ranks, then each factorized layer refitted in forward
    order on its propagated inputs (module docstring).

    Pass it as ``strategy=`` to :func:`balf.compress` or :class:`balf.Compressor`; the
    calibration data must be re-iterable (a tensor, a list, a ``DataLoader``).

    Args:
        refit: the fit (target blend β, ridge, bias correction, rows guard).
        samples: calibration samples the refit runs on (``None``: all of them).

    Example:
        >>> small, report = balf.compress(model, images, balf.BALFConfig(0.8),
        ...                               strategy=balf.LayerSequential(balf.AnchoredRefit(1.0)))
    """

    uses_cache: ClassVar[bool] = True  # the whole-model statistics and decompositions
    refit: AnchoredRefit = AnchoredRefit()
    samples: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.refit, AnchoredRefit):
            raise BALFError(f"refit must be a balf.AnchoredRefit, got {self.refit!r}")
        n = self.samples
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise BALFError(f"samples must be a positive integer or None, got {n!r}")

    def to_dict(self) -> dict[str, Any]:
        """``{"type": "LayerSequential", "refit": {...}, "samples": ...}``, JSON-serialisable."""
        return {"type": type(self).__name__, "refit": self.refit.to_dict(), "samples": self.samples}

    def check(self, context: CompressionContext) -> None:
        refuse_one_shot_data(context, "layer-sequential refit (once per layer)")

    def runner(self, context: CompressionContext) -> LayerSequentialRunner:
        """The object that runs this strategy on ``context``."""
        return LayerSequentialRunner(self, context)


class LayerSequentialRunner(WholeModelRunner):
    """:class:`LayerSequential` on a context: whole-model candidates (ranks from the dense
    model's spectra), then the refit of every layer to factorize, in forward order."""

    def __init__(self, strategy: LayerSequential, context: CompressionContext) -> None:
        super().__init__(context)
        self.strategy = strategy
        self.outcome: dict[str, dict[str, Any]] = {}

    def decompositions_for_install(
        self, out: nn.Module, plan: InstallPlan
    ) -> Generator[tuple[str, LayerDecomposition], nn.Module | None, None]:
        if not plan.activation_aware:
            yield from super().decompositions_for_install(out, plan)
            return
        ctx = self.context
        fallback = ctx.decompositions(True)
        if ctx.data.data is None:
            raise BALFError(
                "layer-sequential refit runs the model on the calibration data: pass the data, "
                "not only Statistics"
            )
        d = ctx.data
        self.outcome = {}
        with ctx.timed("refit"):
            yield from refit_in_order(
                ctx.model, out, {n: plan.ranks[n] for n in plan.replaced}, fallback, d.data,
                self.strategy.refit, self.outcome, samples=self.strategy.samples,
                forward=d.forward, batch_size=d.batch_size, max_batches=d.max_batches,
                progress=d.progress,
            )  # fmt: skip
        for name in plan.ranks:  # the layers kept dense: whole-model decompositions
            if name not in plan.replaced:
                yield name, fallback[name]

    def describe(self) -> dict[str, Any]:
        return {**self.strategy.to_dict(), "layers": self.outcome}

    def layer_notes(self) -> dict[str, str | None]:
        return {n: o["note"] for n, o in self.outcome.items()}


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the needed inputs are captured."""


def _call(model: nn.Module, batch: Any, forward: Callable[[nn.Module, Any], Any] | None) -> Any:
    if forward is not None:
        return forward(model, batch)
    args, kwargs = as_call(batch)
    return model(*args, **kwargs)


def call_order(
    model: nn.Module,
    names: Iterable[str],
    batch: Any,
    forward: Callable[[nn.Module, Any], Any] | None = None,
) -> tuple[list[str], dict[str, int]]:
    """``names`` in the order ``model`` first calls them on ``batch``, and each one's calls per
    forward pass (layers never called come last, with 0 calls)."""
    names = list(names)
    order: list[str] = []
    calls = dict.fromkeys(names, 0)

    def hook(name: str) -> Callable:
        def record(module, inputs, output):
            if calls[name] == 0:
                order.append(name)
            calls[name] += 1

        return record

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            _call(model, batch, forward)
    finally:
        for h in handles:
            h.remove()
    return order + [n for n in names if calls[n] == 0], calls


def _inputs(
    model: nn.Module, layer: nn.Module, batch: Any, calls: int, forward: Callable | None
) -> list[Tensor]:
    """The inputs of ``layer``'s calls while ``model`` runs on ``batch`` (stops after the
    ``calls``-th call)."""
    seen: list[Tensor] = []

    def capture(module, inputs):
        seen.append(inputs[0].detach())
        if len(seen) >= calls:
            raise _Stop

    handle = layer.register_forward_pre_hook(capture, prepend=True)
    try:
        with torch.no_grad():
            _call(model, batch, forward)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen


def _cross_statistics(
    dense_model: nn.Module,
    out_model: nn.Module,
    name: str,
    batches: Sequence[Any],
    calls: int,
    forward: Callable | None,
) -> CrossStatistics:
    dense_layer, out_layer = dense_model.get_submodule(name), out_model.get_submodule(name)
    geo = geometry_of(dense_layer)
    stats = CrossStatistics.zeros(geo.groups, geo.in_dim, model_device(dense_model))
    padding = PaddingMask()
    for batch in batches:
        xs = _inputs(dense_model, dense_layer, batch, calls, forward)
        xps = _inputs(out_model, out_layer, batch, calls, forward)
        padding.set(batch)  # rows of padding tokens are left out, as in every statistic
        real = [padding.rows(dense_layer, x) for x in xs]
        xs = [x if r is None else x[r] for x, r in zip(xs, real, strict=True)]
        xps = [x if r is None else x[r] for x, r in zip(xps, real, strict=False)]
        if len(xs) != len(xps):
            raise BALFError(
                f"layer {name!r} was called {len(xs)} times by the dense model and {len(xps)} "
                "times by the compressed one on the same batch; the refit needs the same calls"
            )
        for x, xp in zip(xs, xps, strict=True):
            rows = zip(input_rows(out_layer, xp), input_rows(dense_layer, x), strict=True)
            for chunk_p, chunk_d in rows:
                stats.add(chunk_p, chunk_d)
    stats.check_finite(name)
    return stats


def refit_in_order(
    dense_model: nn.Module,
    out_model: nn.Module,
    ranks: dict[str, int],
    fallback: dict[str, LayerDecomposition],
    data: Iterable | Tensor,
    refit: AnchoredRefit,
    outcome: dict[str, dict[str, Any]],
    *,
    samples: int | None = None,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    batch_size: int = 64,
    max_batches: int | None = None,
    progress: bool = True,
) -> Generator[tuple[str, LayerDecomposition], nn.Module | None, None]:
    """Fit every layer of ``ranks`` in forward order (module docstring): yields
    ``(name, decomposition)`` and is sent back the installed module before it fits the next.

    Args:
        dense_model: the uncompressed model (not modified).
        out_model: the model being compressed; the caller installs each yielded decomposition
            in it (at ``ranks[name]``) and sends the installed module back.
        ranks: the rank of every layer to factorize.
        fallback: each layer's whole-model decomposition, kept where the rows do not determine
            the refit.
        outcome: filled with ``{name: {"refit": bool, "rows": N, "note": str | None,
            "bias_shift": float | None}}``, the per-layer outcome for the report.
        samples: calibration samples the refit uses (``None``: all).
    """
    device = model_device(dense_model)
    batches = probe_batches(data, samples, device, batch_size=batch_size, max_batches=max_batches)
    with eval_mode(dense_model), eval_mode(out_model), temporarily_unpacked(dense_model):
        order, calls = call_order(dense_model, list(ranks), batches[0], forward)
        for name in tqdm(order, desc="refit", unit="layer", disable=not progress):
            if calls[name] == 0:
                outcome[name] = {"refit": False, "rows": 0, "note": "never called: whole-model "
                                 "factors kept", "bias_shift": None}  # fmt: skip
                yield name, fallback[name]
                continue
            stats = _cross_statistics(dense_model, out_model, name, batches, calls[name], forward)
            dense_layer = dense_model.get_submodule(name)
            d = stats.prop_gram.shape[-1]
            if not refit.determined(stats):
                outcome[name] = {
                    "refit": False,
                    "rows": stats.rows,
                    "note": f"whole-model factors kept: {stats.rows} calibration rows do not "
                    f"determine a fit of {d} inputs",
                    "bias_shift": None,
                }
                yield name, fallback[name]
                continue
            w = weight_matrices(dense_layer)
            dec = anchored_decomposition(
                w, stats, refit.beta, refit.ridge, geometry_of(dense_layer).max_rank
            )
            small = yield name, dec
            shift = None
            if refit.bias_correction and small is not None:
                shift = correct_bias(small, w, dec, ranks[name], stats, refit.beta)
            outcome[name] = {"refit": True, "rows": stats.rows, "note": None, "bias_shift": shift}
            del stats

