"""First-order (Fisher) estimates of the layer sensitivities, in one backward pass for all layers.

:mod:`balf.pipeline.sensitivity` measures each layer's weight ``w_l = D_l / (1 − e_l(r_l⁰))``
with one forward pass per layer: the divergence ``D_l`` of the model's outputs when layer ``l``
alone is truncated to its probe rank ``r_l⁰``. Here ``D_l`` is estimated for every layer at once,
from the second-order expansion of the divergence around the dense model:

    ``D_l ≈ ½ · E[(gᵀ δ_l)²]``,

where ``δ_l = ŷ_l − y_l`` is the change of layer ``l``'s output rows when it is truncated
(computed beside the dense forward pass, ``(…, K)``), and ``g`` is the gradient at that output of
the model's output contracted with a random seed drawn so that ``E[s sᵀ]`` is the divergence's
Hessian at the dense model:

- ``"kl"`` (logits ``(…, C)``): a label ``y`` drawn from the dense model's softmax ``p`` at every
  output row, seed ``s = onehot(y) − p`` (``E[s sᵀ] = diag(p) − ppᵀ``, the Fisher information of
  the softmax; ``g = Jᵀ s`` is the gradient of ``log p_y``);
- ``"relative_error"``: ``s ~ N(0, I) / ‖y_model‖`` (``E[(gᵀδ)²] = ‖Jδ‖² / ‖y_model‖²``).

One forward pass (with each layer's truncated output computed beside it) and one backward pass
over the probe samples give every layer's estimate: about four forward passes' work whatever the
number of layers, against one forward pass per layer for the probes.

**Rows.** Where the model's output has one row per sample (a classifier's ``(B, C)`` logits),
``gᵀδ`` is summed over the whole sample before it is squared (exact, up to the sampling of the
seed). Where it has one row per token (``(B, L, C)``, language models), each of the layer's token
rows ``(b, t)`` is squared separately (the cross terms between positions are left out, the
approximation of Fisher-weighted factorizations): one seed per token, so thousands of terms
rather than a handful of sequences. Layers whose output does not start with the model output's
``(B, L)`` are summed per sample.

The second-order expansion is exact for small truncations and only an estimate at the probe
rank; the measured probes (:mod:`balf.pipeline.sensitivity`) need no expansion.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from balf._device import model_device
from balf._eval_mode import eval_mode
from balf.decomposition import LayerDecomposition
from balf.errors import BALFError
from balf.layers.attention import temporarily_unpacked
from balf.layers.factorize import factorize_layer
from balf.pipeline.sensitivity import (
    MIN_LOST,
    finish_weights,
    model_output,
    probe_batches,
    runner,
)
from balf.ranks.costs import LayerCandidate
from balf.ranks.objectives import SensitivityObjective, probe_rank

__all__ = ["estimate_fisher_sensitivities", "fisher_damage", "output_seed"]

log = logging.getLogger(__name__)


def output_seed(output: Tensor, kind: str, generator: torch.Generator) -> Tensor:
    """The random seed ``s`` contracted with the model's output (module docstring).

    Args:
        output: the model's output (``"kl"``: logits ``(…, C)``).
        kind: ``"kl"`` or ``"relative_error"``.
        generator: the random draws' source (a fixed seed: the estimate is reproducible).

    Returns:
        ``s``, float32, shaped as ``output``.
    """
    out = output.detach().float()
    if kind == "kl":
        p = F.softmax(out, dim=-1)
        flat = p.reshape(-1, p.shape[-1])
        labels = torch.multinomial(flat.cpu(), 1, generator=generator).to(p.device)
        onehot = torch.zeros_like(flat).scatter_(1, labels, 1.0)
        return (onehot - flat).reshape(out.shape)
    noise = torch.randn(out.shape, generator=generator, dtype=torch.float32).to(out.device)
    return noise / out.square().sum().sqrt().clamp_min(1e-30)


class _Tap:
    """One layer's forward hook: a gradient hook on each call's output adding ``Σ (gᵀδ_k)²``
    over its rows, for the change ``δ_k`` of every probe truncation ``k`` of the layer.

    ``δ_k = ŷ_k − y`` is computed from the call's input when the gradient arrives (the input is
    referenced, not copied: it is what autograd keeps anyway).
    """

    def __init__(
        self,
        name: str,
        smalls: Sequence[nn.Module],
        rows_like: Callable[[], tuple[int, ...] | None],
    ) -> None:
        self.name = name
        self.smalls = list(smalls)
        self.rows_like = rows_like  # the model output's leading (B, L) when it has token rows
        self.totals = [0.0] * len(self.smalls)

    def __call__(self, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor | None:
        versions = [x._version for x in inputs if isinstance(x, Tensor)]
        if not output.requires_grad:  # no parameter requires grad: start the graph here
            output = output.detach().requires_grad_()
            returned = output
        else:
            returned = None

        def add(grad: Tensor) -> None:
            lead = self.rows_like()  # set once the model's output is known, before backward
            if [x._version for x in inputs if isinstance(x, Tensor)] != versions:
                raise BALFError(
                    f"layer {self.name!r}: an in-place operation changed its input after it ran; "
                    "the first-order sensitivity estimate needs it (use estimator='probe')"
                )
            g = grad.float()
            with torch.no_grad():
                dense = module.forward(*inputs).float()  # .forward: no hooks
                for k, small in enumerate(self.smalls):
                    prod = g * (small(*inputs).float() - dense)
                    rows_first = lead is not None and tuple(prod.shape[: len(lead)]) == lead
                    if rows_first and prod.dim() > 2:
                        per_row = prod.flatten(len(lead)).sum(-1)  # (B, L): a term per token row
                    else:
                        per_row = prod.flatten(1).sum(-1)  # (B,): one term per sample
                    self.totals[k] += float(per_row.double().square().sum())

        output.register_hook(add)
        return returned


def fisher_damage(
    model: nn.Module,
    candidates: Sequence[LayerCandidate],
    modules: Mapping[str, nn.Module],
    decompositions: Mapping[str, LayerDecomposition],
    data: Iterable | Tensor,
    keeps: Sequence[float],
    *,
    samples: int | None,
    divergence: str = "auto",
    forward: Callable[[nn.Module, Any], Any] | None = None,
    batch_size: int = 64,
    max_batches: int | None = None,
    seed: int = 0,
) -> dict[str, list[tuple[float, float]]]:
    """Every layer's estimated divergence ``D_l`` at each probe truncation, in one pass.

    Args:
        model: the dense model (hooked, not changed; the parameters' ``requires_grad`` flags
            are restored).
        candidates: the layers, with their energy curves ``(R,)``.
        modules: the dense layer of each candidate by name.
        decompositions: the activation-aware decomposition of each layer.
        data: the calibration data (batches as for :func:`balf.collect_statistics`).
        keeps: the probe truncations, as fractions of each layer's parameters kept
            (:func:`balf.ranks.objectives.probe_rank`).
        samples: calibration samples the estimate runs on (``None``: all).
        divergence: one of :data:`balf.ranks.objectives.DIVERGENCES`.
        seed: the random seeds' seed.

    Returns:
        ``{name: [(lost energy 1 − e_l(r_k), D_l at r_k), ...]}`` over the distinct probe ranks
        that lose energy (an empty list: none does), in the order of ``keeps``.

    Raises:
        BALFError: the model's output or an estimate is not finite, or an in-place operation
            changed a layer's input before the backward pass.
    """
    device = model_device(model)
    run = runner(forward)
    batches = probe_batches(data, samples, device, batch_size=batch_size, max_batches=max_batches)
    generator = torch.Generator().manual_seed(seed)
    lost: dict[str, list[float]] = {}
    taps: dict[str, _Tap] = {}
    lead: list[tuple[int, ...] | None] = [None]
    kind = divergence
    rows = n_batches = 0
    params = [p for p in model.parameters() if p.requires_grad]
    with eval_mode(model), temporarily_unpacked(model), torch.enable_grad():
        for cand in candidates:
            ranks = []
            for keep in keeps:
                rank = probe_rank(cand, keep)
                if rank not in ranks and 1.0 - float(cand.energies[rank - 1]) > MIN_LOST:
                    ranks.append(rank)
            lost[cand.name] = [1.0 - float(cand.energies[r - 1]) for r in ranks]
            if ranks:
                dense, dec = modules[cand.name], decompositions[cand.name]
                smalls = [factorize_layer(dense, dec, r) for r in ranks]
                taps[cand.name] = _Tap(cand.name, smalls, lambda: lead[0])
        handles = [
            modules[name].register_forward_hook(tap, prepend=True) for name, tap in taps.items()
        ]
        for p in params:  # gradients of the activations only
            p.requires_grad_(False)
        try:
            for batch in batches:
                out, is_logits = model_output(run(model, batch))
                if kind == "auto":
                    kind = "kl" if is_logits else "relative_error"
                if not bool(torch.isfinite(out).all()):
                    raise BALFError(
                        "the model's output is not finite on the probe samples; the sensitivity "
                        "estimate needs finite outputs (check the model and the calibration data)"
                    )
                lead[0] = tuple(out.shape[:-1]) if out.dim() > 2 else None
                if out.requires_grad:
                    out.backward(output_seed(out, kind, generator).to(out.dtype))
                rows += int(np.prod(out.shape[:-1])) if out.dim() > 2 else len(out)
                n_batches += 1
        finally:
            for h in handles:
                h.remove()
            for p in params:
                p.requires_grad_(True)
    out_damage: dict[str, list[tuple[float, float]]] = {}
    for cand in candidates:
        tap = taps.get(cand.name)
        totals = tap.totals if tap is not None else []
        # the probes' divergences: KL per output row; ‖Δ‖² / ‖y‖² per batch
        ds = [0.5 * t / rows if kind == "kl" else t / n_batches for t in totals]
        if not all(np.isfinite(ds)):
            raise BALFError(
                f"layer {cand.name!r}: the sensitivity estimate is not finite; use the measured "
                "probes (estimator='probe') or give the weights"
            )
        out_damage[cand.name] = list(zip(lost[cand.name], ds, strict=True))
    log.info("first-order damage of %d layers at %d truncations (kind %s)", len(taps),
             len(keeps), kind)  # fmt: skip
    return out_damage


def estimate_fisher_sensitivities(
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
    seed: int = 0,
) -> dict[str, float]:
    """Every candidate layer's sensitivity weight ``w_l``, ``D_l`` estimated to second order.

    Arguments as :func:`balf.pipeline.sensitivity.measure_sensitivities` (``aliases`` is
    accepted for the same signature: the layers are hooked, not swapped). ``seed`` fixes the
    random seeds of the estimate.

    Returns:
        ``{name: w_l}``, finite and ``>= 0``; ``D_l`` is the estimate per output row (token or
        sample), as the probes' mean divergence is.
    """
    del aliases, progress  # hooked on the module itself; one pass, no per-layer progress
    damage = fisher_damage(
        model, candidates, modules, decompositions, data, [objective.probe_keep],
        samples=objective.probe_samples, divergence=objective.divergence, forward=forward,
        batch_size=batch_size, max_batches=max_batches, seed=seed,
    )  # fmt: skip
    weights: dict[str, float | None] = {
        name: (points[0][1] / points[0][0] if points else None) for name, points in damage.items()
    }
    return finish_weights(weights)
