"""Calibration statistics (method §2): one forward pass, one Gram matrix per layer.

For every target layer the cheaper side is accumulated in float64:

* ``"output"`` — ``Γ_g = Y_gᵀ Y_g`` (K×K) from the pre-bias output in a forward hook, no im2col;
* ``"input"``  — ``C_g = X_gᵀ X_g`` (D×D), through chunked im2col for convolutions; only when D < K.

Activations are never stored: each call's product is added to the accumulator and dropped.
"""

from __future__ import annotations

import contextlib
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
    SequenceFirstProbe,
    as_call,
    batch_size_of,
    first_call_sample,
    first_samples,
    split_batches,
    tensors_of,
    to_device,
)
from balf.calibration.layer_pass import hooked_pass, sum_over_processes
from balf.calibration.padding import PaddingMask
from balf.calibration.statistics import Statistics
from balf.errors import BALFError, StatisticsError
from balf.io.hashing import update_with_tensor
from balf.layers.attention import temporarily_unpacked
from balf.layers.geometry import SIDES, Side
from balf.layers.selection import resolve_layers

__all__ = ["collect_statistics"]

log = logging.getLogger(__name__)


class _CalibrationPass:
    """The forward pass over the calibration batches: runs the model on each and records the
    sample count, the first sample (example input), a digest of every input tensor and whether
    any floating-point input is non-zero. The Gram matrices come from the layers' hooks."""

    def __init__(self, model: nn.Module, forward: Callable[[nn.Module, Any], Any] | None) -> None:
        self.model = model
        self.padding = PaddingMask()
        self.forward = forward
        self.device = model_device(model)
        self.num_samples = 0
        self.example: Any = None
        self.example_kwargs: dict = {}
        self.digest = hashlib.blake2b(digest_size=16)
        self.floating = self.nonzero = False
        # whether an input (bool masks, one-value-per-sample inputs aside) varies within a sample
        self.has_samples = self.varies = False
        self.dim: int | None = None  # the batch dimension, from the first batch (batch_dim)

    def run(self, batch: Any) -> None:
        """Run the model on one batch (skipped when it holds no sample)."""
        if self.forward is None:
            args, kwargs = as_call(batch)
            batch = (args, kwargs)
        if batch_size_of(batch, self.dim or 0) == 0:
            return
        on_device = to_device(batch, self.device)
        probe = SequenceFirstProbe(self.model) if self.dim is None else contextlib.nullcontext()
        self.padding.set(on_device)
        try:
            with probe:
                if self.forward is not None:
                    self.forward(self.model, on_device)
                else:
                    self.model(*on_device[0], **on_device[1])
        finally:
            self.padding.current = None
        if self.dim is None:
            self.dim = probe.dim(batch)
        n = batch_size_of(batch, self.dim)
        self._record(batch, n)
        if self.example is None:
            if self.forward is not None:
                self.example = first_samples(batch, n, self.dim)
            else:
                args, kwargs = batch
                self.example, self.example_kwargs = first_call_sample(args, kwargs, n, self.dim)
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

    def _record(self, batch: Any, n: int) -> None:
        for t in tensors_of(batch):
            update_with_tensor(self.digest, t)
            if t.is_floating_point() or t.is_complex():
                self.floating = True
                self.nonzero = self.nonzero or bool(t.any())
            if t.dtype == torch.bool or self.varies:
                continue
            rows = t.reshape(n, -1) if t.dim() and t.shape[0] == n else t.reshape(1, -1)
            if rows.shape[1] > 1:
                self.has_samples = True
                self.varies = bool((rows != rows[:, :1]).any())

    @property
    def constant(self) -> bool:
        """Whether every sample held one value throughout (a blank image, one repeated token)."""
        return self.has_samples and not self.varies


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


def _check_collected(stats: Statistics, all_zero: bool, constant: bool = False) -> None:
    """Raise on empty data or a layer never called, warn on all-zero or constant inputs, check
    finiteness."""
    if stats.num_samples == 0:
        raise BALFError("the calibration data is empty: pass at least one non-empty batch")
    if all_zero:
        warnings.warn(
            "the calibration inputs are all zero: the statistics carry no information about "
            "the data (check the data loading and normalisation)",
            UserWarning,
            stacklevel=3,  # the caller of collect_statistics
        )
    elif constant:
        warnings.warn(
            "every calibration sample is constant (each input holds a single value throughout, "
            "e.g. a blank image): the statistics carry no information about the data, so layers "
            "look low-rank and a budget cuts them hard at energy_kept ≈ 1.0 (check the data "
            "loading, decoding and normalisation)",
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
    calibration = _CalibrationPass(model, forward)

    def run() -> None:
        with eval_mode(model):
            for batch in _progress_bar(data, batch_size, max_batches, progress):
                calibration.run(batch)

    def rerun_example() -> None:
        example = calibration.rerun_example()
        if example is not None:
            with eval_mode(model):
                example()

    with temporarily_unpacked(model):
        collected = hooked_pass(
            targets, run, side=side, padding=calibration.padding, distributed=distributed,
            rerun_example=rerun_example,
        )  # fmt: skip
    stats = Statistics(
        layers=collected.layers,
        num_samples=sum_over_processes(calibration.num_samples, distributed),
        example_input=calibration.example,
        extra={"data_digest": calibration.digest.hexdigest(), "skipped": collected.skipped},
        example_kwargs=calibration.example_kwargs,
    )
    _check_collected(
        stats, calibration.floating and not calibration.nonzero, calibration.constant
    )
    log.info(
        "collected statistics for %d layers over %d samples",
        len(stats.layers),
        calibration.num_samples,
    )
    return stats
