"""Calibration statistics (method §2): one forward pass, one Gram matrix per layer.

For every target layer the cheaper side is accumulated in float64:

* ``"output"`` — ``Γ_g = Y_gᵀ Y_g`` (K×K) from the pre-bias output in a forward hook, no im2col;
* ``"input"``  — ``C_g = X_gᵀ X_g`` (D×D), through chunked im2col for convolutions; only when D < K.

Activations are never stored: each call's product is added to the accumulator and dropped.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from balf._device import model_device
from balf._eval_mode import eval_mode
from balf.calibration.batches import (
    as_call,
    batch_size_of,
    first_call_sample,
    first_samples,
    split_batches,
    tensors_of,
    to_device,
)
from balf.calibration.statistics import LayerStatistics, Statistics
from balf.calibration.uncalled import uncalled_reasons
from balf.errors import BALFError, StatisticsError
from balf.io.hashing import tensor_digest, update_with_tensor
from balf.layers.attention import temporarily_unpacked
from balf.layers.dispatch import (
    dense_weight,
    geometry_of,
    input_gram,
    output_gram,
    rows_of_call,
)
from balf.layers.geometry import SIDES, Side
from balf.layers.selection import resolve_layers

__all__ = ["collect_statistics"]

log = logging.getLogger(__name__)


def _distributed_world_size() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Per-batch products run in the layer's dtype, but never below float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class _Accumulator:
    """Forward hook adding one layer's Gram matrix of each call to a float64 accumulator."""

    def __init__(self, name: str, module: nn.Module, side: Side) -> None:
        geo = geometry_of(module)
        size = geo.in_dim if side == "input" else geo.out_dim
        w = dense_weight(module)
        self.module = module
        self.side = side
        self.stats = LayerStatistics(
            side=side,
            gram=torch.zeros(geo.groups, size, size, dtype=torch.float64, device=w.device),
            weight_digest=tensor_digest(w),
        )
        self.name = name

    def __call__(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        st = self.stats
        dtype = _compute_dtype(output.dtype)
        if self.side == "output":
            gram = output_gram(module, output, dtype)
        else:
            gram = input_gram(module, inputs[0], dtype)
        st.gram += gram.to(torch.float64)
        st.rows += rows_of_call(module, output)
        st.calls += 1
        st.output_shape = tuple(output.shape[1:])


class _CalibrationPass:
    """The forward pass over the calibration batches: runs the model on each and records the
    sample count, the first sample (example input), a digest of every input tensor and whether
    any floating-point input is non-zero. The Gram matrices come from the layers' hooks."""

    def __init__(self, model: nn.Module, forward: Callable[[nn.Module, Any], Any] | None) -> None:
        self.model = model
        self.forward = forward
        self.device = model_device(model)
        self.num_samples = 0
        self.example: Any = None
        self.example_kwargs: dict = {}
        self.digest = hashlib.blake2b(digest_size=16)
        self.floating = self.nonzero = False

    def run(self, batch: Any) -> None:
        """Run the model on one batch (skipped when it holds no sample)."""
        if self.forward is None:
            args, kwargs = as_call(batch)
            batch = (args, kwargs)
        n = batch_size_of(batch)
        if n == 0:
            return
        self._record(batch)
        batch = to_device(batch, self.device)
        if self.forward is not None:
            if self.example is None:
                self.example = first_samples(batch, n)
            self.forward(self.model, batch)
        else:
            args, kwargs = batch
            if self.example is None:
                self.example, self.example_kwargs = first_call_sample(args, kwargs, n)
            self.model(*args, **kwargs)
        self.num_samples += n

    def rerun_example(self) -> Callable[[], Any] | None:
        """One forward pass on the recorded example (``None`` when no batch was run)."""
        if self.example is None:
            return None
        example = to_device(self.example, self.device)
        if self.forward is not None:
            return lambda: self.forward(self.model, example)
        args = example if isinstance(example, tuple) else (example,)
        kwargs = to_device(self.example_kwargs, self.device)
        return lambda: self.model(*args, **kwargs)

    def _record(self, batch: Any) -> None:
        for t in tensors_of(batch):
            update_with_tensor(self.digest, t)
            if t.is_floating_point() or t.is_complex():
                self.floating = True
                self.nonzero = self.nonzero or bool(t.any())


def _progress_bar(
    data: Iterable | Tensor, batch_size: int, max_batches: int | None, progress: bool
) -> Iterator:
    """The calibration batches under a tqdm bar (of known length when ``data`` has one)."""
    try:
        total = None if isinstance(data, Tensor) else len(data)
    except TypeError:
        total = None
    if total is not None and max_batches is not None:
        total = min(total, max_batches)
    return tqdm(
        split_batches(data, batch_size, max_batches),
        total=total,
        desc="calibration",
        unit="batch",
        disable=not progress,
    )


def _check_collected(stats: Statistics, all_zero: bool) -> None:
    """Raise on empty data or a layer never called, warn on all-zero inputs, check finiteness."""
    if stats.num_samples == 0:
        raise BALFError("the calibration data is empty: pass at least one non-empty batch")
    if all_zero:
        warnings.warn(
            "the calibration inputs are all zero: the statistics carry no information about "
            "the data (check the data loading and normalisation)",
            UserWarning,
            stacklevel=3,  # the caller of collect_statistics
        )
    if not stats.layers:
        skipped = stats.extra.get("skipped", {})
        listed = "; ".join(f"{n}: {r}" for n, r in list(skipped.items())[:5])
        raise StatisticsError(
            f"none of the {len(skipped)} chosen layers was called during calibration ({listed}"
            f"{' …' if len(skipped) > 5 else ''})"
        )
    stats.check_finite()


def _drop_uncalled(
    accumulators: dict[str, _Accumulator], calibration: _CalibrationPass
) -> dict[str, str]:
    """Remove the layers whose hook never fired; ``{name: reason}`` (see
    :mod:`balf.calibration.uncalled`)."""
    uncalled = {n: acc.module for n, acc in accumulators.items() if acc.stats.calls == 0}
    for name in uncalled:
        del accumulators[name]
    if not uncalled:
        return {}
    with eval_mode(calibration.model):
        reasons = uncalled_reasons(uncalled, calibration.rerun_example())
    log.warning(
        "%d layer(s) never called during calibration are skipped: %s",
        len(reasons),
        ", ".join(list(reasons)[:10]),
    )
    return reasons


def collect_statistics(
    model: nn.Module,
    data: Iterable | Tensor,
    layers: Iterable[str] | None = None,
    *,
    side: Side | None = None,
    batch_size: int = 64,
    progress: bool = True,
    distributed: bool | None = None,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    max_batches: int | None = None,
    exclude: Iterable[str] | None = None,
) -> Statistics:
    """Run the calibration data through ``model`` once and accumulate per-layer Gram matrices.

    Args:
        model: the network, on any device; it is left in its original mode.
        data: iterable of batches, or a tensor of samples ``(N, ...)`` split into batches of
            ``batch_size``. A batch is a tensor (the input), an ``(args, kwargs)`` pair (a
            tuple/list and a dict: ``model(*args, **kwargs)``, for models with several inputs),
            or another tuple/list whose first element is the input (``(images, labels)``).
        layers: module names, glob patterns or name suffixes (default: every supported
            layer, see :func:`balf.register_layer_kind`; ``nn.MultiheadAttention``
            projections are ``<attention>.in_proj``/``<attention>.out_proj``).
        side: force ``"input"`` or ``"output"`` statistics for every layer (both give the same
            decomposition); ``None`` picks the cheaper side per layer (input only when D < K).
        progress: show a tqdm bar over batches.
        distributed: sum the statistics over the processes of ``torch.distributed`` (each
            process passes its own shard of the data) before returning; ``None`` does so
            whenever a process group with more than one process is initialised.
        forward: ``forward(model, batch)`` runs the model on one batch of any structure
            (e.g. a dict); tensors in the batch are moved to the model's device first, and
            the leading size of its first tensor counts its samples.
        max_batches: use at most this many batches (needed for an endless iterable).
        exclude: names, glob patterns or suffixes of layers to leave out.

    Returns:
        :class:`Statistics` with one float64 Gram matrix batch per layer; ``extra["data_digest"]``
        is a digest of every calibration tensor seen. Layers the forward pass never called
        (unused, or used only through their weight) have no entry; ``extra["skipped"]`` gives
        each with the reason.

    Raises:
        BALFError: empty data, unknown layer names, or an invalid ``side``.
        StatisticsError: NaN/Inf in a layer's statistics, or no chosen layer was called.

    Warns:
        UserWarning: every floating-point calibration input is zero.

    Example:
        >>> stats = balf.collect_statistics(model, calib_loader)
        >>> stats.save("stats.pt")
    """
    if side is not None and side not in SIDES:
        raise BALFError(f"side must be 'input', 'output' or None, got {side!r}")
    targets, _ = resolve_layers(model, layers, exclude)
    if not targets:
        raise BALFError(
            "the model has no supported layer (e.g. Conv2d, Linear) to collect statistics for"
        )
    accumulators = {
        name: _Accumulator(name, m, side or geometry_of(m).preferred_side())
        for name, m in targets.items()
    }
    calibration = _CalibrationPass(model, forward)
    with temporarily_unpacked(model):
        # prepended: the layer's own output, before any forward hook of the user changes it
        handles = [
            m.register_forward_hook(accumulators[n], prepend=True) for n, m in targets.items()
        ]
        try:
            with eval_mode(model):
                for batch in _progress_bar(data, batch_size, max_batches, progress):
                    calibration.run(batch)
        finally:
            for h in handles:
                h.remove()
        skipped = _drop_uncalled(accumulators, calibration) if calibration.num_samples else {}
    stats = Statistics(
        layers={name: acc.stats for name, acc in accumulators.items()},
        num_samples=calibration.num_samples,
        example_input=calibration.example,
        extra={"data_digest": calibration.digest.hexdigest(), "skipped": skipped},
        example_kwargs=calibration.example_kwargs,
    )
    if distributed is None:
        distributed = _distributed_world_size() > 1
    if distributed:
        stats.all_reduce()
    _check_collected(stats, calibration.floating and not calibration.nonzero)
    log.info(
        "collected statistics for %d layers over %d samples",
        len(stats.layers),
        calibration.num_samples,
    )
    return stats
