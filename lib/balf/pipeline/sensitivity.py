"""Measured layer sensitivities for :class:`balf.ranks.objectives.SensitivityObjective`.

For each chosen layer ``l`` alone, the layer is truncated to its probe rank ``r_l⁰`` (the rank
keeping ``probe_keep`` of its parameters, activation-aware factors), the model runs on the probe
samples (the first ``probe_samples`` calibration samples), and the divergence ``D_l`` of its
outputs from the dense model's is averaged over the output rows. The layer's weight is

    ``w_l = D_l / (1 − e_l(r_l⁰))``,

the output change per unit of lost output energy, so that ``w_l · (1 − e_l(r))`` approximates
the damage of any truncation of that layer. The layer is put back after its probe: the model
ends as it started. Layers whose probe loses no energy (the probe rank is full, or the spectrum
is concentrated there) get the median weight of the others, and no weight is below a thousandth
of that median.

Cost: one forward pass over the probe samples per layer, plus one for the dense outputs; the
dense outputs are kept (a language model's logits are ``tokens × vocabulary`` floats per batch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from balf._device import model_device
from balf._eval_mode import eval_mode
from balf.calibration.batches import as_call, batch_size_of, split_batches, to_device
from balf.decomposition import LayerDecomposition
from balf.errors import BALFError
from balf.layers.attention import temporarily_unpacked
from balf.layers.factorize import factorize_layer
from balf.ranks.costs import LayerCandidate
from balf.ranks.objectives import SensitivityObjective, probe_rank

__all__ = [
    "MIN_LOST",
    "OutputProbe",
    "finish_weights",
    "measure_sensitivities",
    "model_output",
    "output_divergence",
    "probe_batches",
    "runner",
]

log = logging.getLogger(__name__)

#: A probe losing less than this fraction of the layer's energy measures nothing reliable (e.g.
#: a layer that saw fewer calibration rows than the probe rank): such a layer gets the median.
MIN_LOST = 1e-6
#: Weights are at least this fraction of the median: a probe whose output did not move (to
#: float precision) must not make the layer free to cut.
_FLOOR = 1e-3


def model_output(output: Any) -> tuple[Tensor, bool]:
    """The tensor a model's output is judged by, and whether it holds logits.

    A tensor is itself (logits when it has two dimensions, ``(B, classes)``); a mapping or a
    Hugging Face ``ModelOutput`` gives its ``logits`` entry (logits), else its first tensor; a
    tuple or list gives its first tensor.

    Raises:
        BALFError: the output holds no tensor.
    """
    if isinstance(output, Tensor):
        return output, output.dim() == 2
    if isinstance(output, Mapping):
        if isinstance(output.get("logits"), Tensor):
            return output["logits"], True
        values: Iterable = output.values()
    elif isinstance(output, (tuple, list)):
        values = output
    else:
        values = ()
    for v in values:
        if isinstance(v, Tensor):
            return v, False
    raise BALFError(
        f"cannot measure sensitivities: the model returned {type(output).__name__} with no "
        "tensor; give the weights (SensitivityObjective(weights=...)) or use another objective"
    )


@torch.no_grad()
def output_divergence(reference: Tensor, output: Tensor, kind: str) -> float:
    """The mean divergence of ``output`` from ``reference`` (same shape).

    Args:
        reference: the dense model's output; for ``"kl"`` its log-softmax over the last
            dimension, ``(*, C)``.
        output: the probed model's raw output, ``(*, C)``.
        kind: ``"kl"`` (KL(reference ‖ output) per row, averaged over the rows) or
            ``"relative_error"`` (``‖output − reference‖² / ‖reference‖²``).
    """
    out = output.float()
    if kind == "kl":
        log_q = F.log_softmax(out, dim=-1)
        return float(
            F.kl_div(
                log_q.flatten(0, -2),
                reference.flatten(0, -2),
                log_target=True,
                reduction="batchmean",
            )
        )
    ref = reference.float()
    return float((out - ref).square().sum() / ref.square().sum().clamp_min(1e-30))


class OutputProbe:
    """The probe batches, the dense model's outputs on them, and the divergence to use."""

    def __init__(
        self,
        model: nn.Module,
        batches: list[Any],
        run: Callable[[nn.Module, Any], Any],
        divergence: str,
    ) -> None:
        self.model, self.batches, self.run = model, batches, run
        self.references: list[Tensor] = []
        self.kind = divergence
        for batch in batches:
            out, is_logits = model_output(run(model, batch))
            if self.kind == "auto":
                self.kind = "kl" if is_logits else "relative_error"
            ref = out.float()
            self.references.append(F.log_softmax(ref, dim=-1) if self.kind == "kl" else ref)

    def divergence(self) -> float:
        """The mean divergence of the model as it is now from the dense outputs."""
        return self.scores()[1]

    def scores(self) -> tuple[float, float]:
        """``(disagreement, divergence)`` of the model as it is now: the fraction of samples
        whose top class differs from the dense model's (per-sample logits ``(B, C)`` only, else
        0), and :meth:`divergence`."""
        total, differ, rows = 0.0, 0, 0
        for batch, ref in zip(self.batches, self.references, strict=True):
            out, _ = model_output(self.run(self.model, batch))
            total += output_divergence(ref, out, self.kind)
            if self.kind == "kl" and ref.dim() == 2:
                differ += int((out.argmax(-1) != ref.argmax(-1)).sum())
                rows += len(ref)
        return (differ / rows if rows else 0.0), total / len(self.batches)


def _head(obj: Any, n: int, k: int) -> Any:
    """``obj`` with every tensor whose leading size is ``n`` cut to its first ``k`` entries."""
    if isinstance(obj, Tensor):
        return obj[:k] if obj.dim() and obj.shape[0] == n else obj
    if isinstance(obj, Mapping):
        return {key: _head(v, n, k) for key, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_head(v, n, k) for v in obj)
    return obj


def probe_batches(
    data: Iterable | Tensor,
    samples: int | None,
    device: torch.device,
    *,
    batch_size: int,
    max_batches: int | None,
) -> list[Any]:
    """The first ``samples`` calibration samples (``None``: all), as batches on ``device``."""
    out, seen = [], 0
    for batch in split_batches(data, batch_size, max_batches):
        n = batch_size_of(batch)
        if n == 0:
            continue
        if samples is not None and seen + n > samples:
            batch, n = _head(batch, n, samples - seen), samples - seen
        out.append(to_device(batch, device))
        seen += n
        if samples is not None and seen >= samples:
            break
    if not out:
        raise BALFError("the calibration data is empty: the sensitivity probes need samples")
    return out


def runner(forward: Callable[[nn.Module, Any], Any] | None) -> Callable[[nn.Module, Any], Any]:
    if forward is not None:
        return forward

    def run(model: nn.Module, batch: Any) -> Any:
        args, kwargs = as_call(batch)
        return model(*args, **kwargs)

    return run


@torch.no_grad()
def measure_sensitivities(
    model: nn.Module,
    candidates: Sequence[LayerCandidate],
    modules: Mapping[str, nn.Module],
    aliases: Mapping[str, Sequence[str]],
    decompositions: Mapping[str, LayerDecomposition],
    data: Iterable | Tensor,
    objective: SensitivityObjective,
    *,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    batch_size: int = 64,
    max_batches: int | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Every candidate layer's sensitivity weight ``w_l`` (module docstring).

    Args:
        model: the dense model; each layer is swapped out and back in place (the model ends as
            it started).
        candidates: the layers, with their activation-aware energy curves ``(R,)``.
        modules: the dense layer of each candidate by name.
        aliases: every name each layer is registered under (all are swapped).
        decompositions: the activation-aware decomposition of each layer.
        data: the calibration data (batches as for :func:`balf.collect_statistics`).
        objective: the probe settings (``probe_keep``, ``probe_samples``, ``divergence``).

    Returns:
        ``{name: w_l}``, finite and ``>= 0``.
    """
    device = model_device(model)
    run = runner(forward)
    batches = probe_batches(
        data, objective.probe_samples, device, batch_size=batch_size, max_batches=max_batches
    )
    weights: dict[str, float | None] = {}
    with eval_mode(model), temporarily_unpacked(model):
        probe = OutputProbe(model, batches, run, objective.divergence)
        for cand in tqdm(candidates, desc="sensitivity", unit="layer", disable=not progress):
            rank = probe_rank(cand, objective.probe_keep)
            lost = 1.0 - float(cand.energies[rank - 1])
            if not lost > MIN_LOST:
                weights[cand.name] = None
                continue
            dense = modules[cand.name]
            small = factorize_layer(dense, decompositions[cand.name], rank)
            try:
                for alias in aliases[cand.name]:
                    model.set_submodule(alias, small)
                divergence = probe.divergence()
            finally:
                for alias in aliases[cand.name]:
                    model.set_submodule(alias, dense)
            if not np.isfinite(divergence):
                raise BALFError(
                    f"layer {cand.name!r}: the model's output is not finite with the layer "
                    f"truncated to rank {rank}; give the weights or use another objective"
                )
            weights[cand.name] = max(divergence, 0.0) / lost
    log.info("sensitivity weights of %d layers (kind %s)", len(weights), probe.kind)
    return finish_weights(weights)


def finish_weights(weights: Mapping[str, float | None]) -> dict[str, float]:
    """Weights with the unmeasured layers (``None``) at the median of the measured ones, and
    none below :data:`_FLOOR` of that median."""
    measured = [w for w in weights.values() if w is not None]
    fill = float(np.median(measured)) if measured else 1.0
    return {n: max(w, _FLOOR * fill) if w is not None else fill for n, w in weights.items()}


def load_or_measure_sensitivities(
    cache: Any,
    model: nn.Module,
    candidates: Sequence[LayerCandidate],
    statistics: Any,
    data: Iterable | Tensor,
    objective: SensitivityObjective,
    measure: Callable[[Iterable | Tensor], dict[str, float]],
    *,
    batch_size: int = 64,
    max_batches: int | None = None,
    forward: Callable | None = None,
    settings: list | None = None,
) -> tuple[dict[str, Any], Iterable | Tensor]:
    """``measure(data)``'s weights, from ``cache`` (a :class:`balf.Cache` or ``None``) when it
    holds them for this model, these layers, statistics, probe settings and data.

    ``settings`` replaces the key's probe settings (default: ``objective``'s), for other
    measurements cached the same way (e.g. the damage points of
    :class:`balf.ranks.objectives.DamageObjective`).

    Returns:
        The weights, and the data to use afterwards (reading an iterable's first batch for its
        fingerprint re-wraps it).
    """
    if cache is None:
        return measure(data), data
    from balf.io.fingerprints import data_fingerprint, statistics_digest
    from balf.io.hashing import model_fingerprint

    fingerprint, data = data_fingerprint(data, batch_size, max_batches, forward)
    names = [c.name for c in candidates]
    # the probes' settings only: every sensitivity objective reads the same measurement
    if settings is None:  # a sensitivity objective's probe settings
        settings = [objective.probe_keep, objective.probe_samples, objective.divergence]
        if objective.estimator != "probe":  # keys of the probes' weights as before
            settings.append(objective.estimator)
    key = cache.key(
        "sensitivities",
        model=model_fingerprint(model),
        layers=names,
        statistics=statistics_digest(statistics, names),
        probe=settings,
        data=fingerprint,
    )
    state = cache.load("sensitivities", key)
    if state is not None and set(state.get("weights", {})) == set(names):
        return dict(state["weights"]), data
    weights = measure(data)
    cache.save("sensitivities", key, {"weights": weights})
    return weights, data
