"""Propagation-aware refit: fit a layer on its propagated inputs to the dense model's outputs.

Whole-model BALF fits each layer on the *original* model's inputs ``X``; at inference the layer
receives the *propagated* inputs ``X'`` of a model whose earlier layers are already compressed.
Block by block fits ``X'W ≈ X'Ŵ`` (the method's problem on ``X'``), which reproduces what the
dense layer would do with the already-damaged input. Anchored refit (AA-SVD, SAES-SVD, GPTAQ
for quantisation) instead aims at the dense model's own outputs ``XW``, so a layer can repair
part of the error its inputs carry. :class:`AnchoredRefit` blends the two targets,

    ``T = (1 − β)·X'W + β·XW``,   minimise ``‖X'Ŵ − T‖² + λ‖Ŵ‖²`` over rank-``r`` ``Ŵ``,

solved as reduced-rank ridge regression per group ``g`` from three statistics of the calibration
rows: ``C' = X'ᵀX'`` and ``M = X'ᵀX`` (``(G, D, D)``, float64; the dense and the compressed model
run side by side on the same batches) and the weight ``W`` ``(G, D, K)``:

    ``W_β = (C' + λI)⁻¹ ((1 − β)·C'W + β·MW)``     (ridge regression onto the blended target)
    ``Γ = W_βᵀ C' W_β = V Σ² Vᵀ``                   (Gram of the fitted outputs ``X'W_β``)
    ``Ŵ = W_β V_r V_rᵀ``,  factors ``A = W_β V_r``, ``B = V_rᵀ``.

``λ = ridge · tr(C')/D`` (relative to the inputs' mean energy). With ``β = 0`` and no ridge the
fitted outputs are ``X'W`` and ``Γ = WᵀC'W``: today's block by block. With no propagated error
(``X' = X``, so ``M = C'``) every β gives ``W_β = W``: whole-model BALF.

A layer whose calibration rows do not determine the fit — fewer rows than inputs per group, as a
classifier fed one row per image — keeps its whole-model factors, and the report says so.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from balf.decomposition import LayerDecomposition
from balf.errors import BALFError

__all__ = [
    "AnchoredRefit",
    "CrossStatistics",
    "RefitDecomposition",
    "anchored_decomposition",
    "bias_shift",
    "correct_bias",
]

_F64 = torch.float64


@dataclass(frozen=True)
class AnchoredRefit:
    """How a propagation-aware strategy fits each layer (module docstring).

    Args:
        beta: the blend of targets, ``0`` (``X'W``, what the dense layer does with the
            propagated input) … ``1`` (``XW``, what the dense model computes).
        ridge: ``λ`` relative to the mean diagonal of ``C'``.
        bias_correction: also shift the layer's bias so that the mean of its output on the
            calibration rows equals the mean of the target (layers with a bias only).
        min_rows_per_input: refit only where a group's calibration rows are at least this
            many times its inputs ``D`` (otherwise the whole-model factors are kept).
    """

    beta: float = 1.0
    ridge: float = 1e-3
    bias_correction: bool = False
    min_rows_per_input: float = 1.0

    def __post_init__(self) -> None:
        for name, low, high in (("beta", 0.0, 1.0), ("ridge", 0.0, math.inf),
                                ("min_rows_per_input", 0.0, math.inf)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise BALFError(f"{name} must be a number, got {value!r}")
            value = float(value)
            if not (math.isfinite(value) or high == math.inf) or not low <= value <= high:
                raise BALFError(f"{name} must be in [{low}, {high}], got {value}")
            object.__setattr__(self, name, value)
        if not isinstance(self.bias_correction, bool):
            raise BALFError(f"bias_correction must be True or False, got {self.bias_correction!r}")

    def to_dict(self) -> dict:
        return {
            "type": type(self).__name__,
            "beta": self.beta,
            "ridge": self.ridge,
            "bias_correction": self.bias_correction,
            "min_rows_per_input": self.min_rows_per_input,
        }

    @classmethod
    def from_dict(cls, data: dict) -> AnchoredRefit:
        """The refit :meth:`to_dict` describes (its ``"type"`` entry, if any, must name it).

        Raises:
            BALFError: another type, or unknown settings.
        """
        settings = dict(data)
        kind = settings.pop("type", cls.__name__)
        unknown = sorted(set(settings) - {"beta", "ridge", "bias_correction", "min_rows_per_input"})
        if kind != cls.__name__ or unknown:
            raise BALFError(
                f"not an AnchoredRefit description: type {kind!r}, unknown settings {unknown}"
            )
        return cls(**settings)

    def determined(self, stats: CrossStatistics) -> bool:
        """Whether ``stats`` has enough rows for the fit (``rows ≥ min_rows_per_input · D``)."""
        return stats.rows >= self.min_rows_per_input * stats.prop_gram.shape[-1]


@dataclass
class CrossStatistics:
    """One layer's statistics on paired calibration rows (dense ``X``, propagated ``X'``).

    Attributes:
        prop_gram: ``C' = X'ᵀX'`` ``(G, D, D)`` float64.
        cross: ``M = X'ᵀX`` ``(G, D, D)`` float64.
        prop_sum: ``Σ_rows x'`` ``(G, D)`` float64 (bias correction).
        dense_sum: ``Σ_rows x`` ``(G, D)`` float64.
        rows: rows ``N`` per group.
    """

    prop_gram: Tensor
    cross: Tensor
    prop_sum: Tensor
    dense_sum: Tensor
    rows: int = 0

    @classmethod
    def zeros(cls, groups: int, size: int, device: torch.device) -> CrossStatistics:
        def z(*shape: int) -> Tensor:
            return torch.zeros(*shape, dtype=_F64, device=device)

        return cls(z(groups, size, size), z(groups, size, size), z(groups, size), z(groups, size))

    def add(self, prop: Tensor, dense: Tensor) -> None:
        """Add paired row chunks ``X'`` and ``X``, each ``(G, n, D)``."""
        if prop.shape != dense.shape:
            raise BALFError(
                f"the dense and the compressed model gave a layer inputs of different shapes "
                f"({tuple(dense.shape)} vs {tuple(prop.shape)}); the propagation-aware refit "
                "needs both models to run the same computation on the same batches"
            )
        p, d = prop.to(_F64), dense.to(_F64)
        self.prop_gram += p.transpose(1, 2) @ p
        self.cross += p.transpose(1, 2) @ d
        self.prop_sum += p.sum(1)
        self.dense_sum += d.sum(1)
        self.rows += prop.shape[1]

    def check_finite(self, name: str) -> None:
        if not (torch.isfinite(self.prop_gram).all() and torch.isfinite(self.cross).all()):
            raise BALFError(
                f"layer {name!r}: the refit statistics contain NaN or Inf (the compressed or the "
                "dense model produced non-finite activations on the calibration data)"
            )


@dataclass
class RefitDecomposition(LayerDecomposition):
    """An output-form decomposition of the refitted weight ``W_β`` (``fitted``, ``(G, D, K)``
    float64): its factors come from ``W_β``, whatever weight the caller passes."""

    fitted: Tensor | None = None

    def factors(self, weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
        return super().factors(self.fitted, rank)


def _ridge_inverse_apply(gram: Tensor, rhs: Tensor, ridge: float) -> Tensor:
    """``(C + λI)⁺ rhs`` for ``C`` ``(G, D, D)`` symmetric PSD and ``rhs`` ``(G, D, K)``,
    ``λ = ridge · tr(C)/D``; without ridge, directions of ``C`` below a relative tolerance of
    its largest eigenvalue are left out (the pseudo-inverse)."""
    evals, q = torch.linalg.eigh(gram)
    evals = evals.clamp_min(0)
    scale = evals.mean(-1, keepdim=True)
    shifted = evals + ridge * scale
    tol = gram.shape[-1] * torch.finfo(_F64).eps * evals.amax(-1, keepdim=True)
    inv = torch.where(shifted > tol, 1.0 / shifted.clamp_min(torch.finfo(_F64).tiny), 0.0)
    return q @ (inv[:, :, None] * (q.transpose(1, 2) @ rhs))


def anchored_decomposition(
    weight: Tensor, stats: CrossStatistics, beta: float, ridge: float, max_rank: int
) -> RefitDecomposition:
    """The anchored refit of one layer (module docstring).

    Args:
        weight: the dense layer's ``W`` ``(G, D, K)``
            (:func:`balf.layers.dispatch.weight_matrices`).
        stats: its statistics on paired rows.
        beta: target blend.
        ridge: relative ridge.
        max_rank: ranks kept in the decomposition (the layer's ``min(D, K)``).

    Returns:
        A :class:`RefitDecomposition` whose rank-``r`` factors give ``W_β V_r V_rᵀ``.
    """
    w = weight.to(device=stats.prop_gram.device, dtype=_F64)
    c, m = stats.prop_gram, stats.cross
    target = (1.0 - beta) * (c @ w) + beta * (m @ w) if beta else c @ w
    fitted = _ridge_inverse_apply(c, target, ridge)
    gamma = fitted.transpose(1, 2) @ c @ fitted
    gamma = 0.5 * (gamma + gamma.transpose(1, 2))
    sigma2, v = torch.linalg.eigh(gamma)
    sigma2, v = sigma2.flip(-1).clamp_min(0)[:, :max_rank], v.flip(-1)[:, :, :max_rank]
    ones = torch.ones_like(sigma2)
    return RefitDecomposition("output", True, sigma2, v.contiguous(), ones, ones, fitted=fitted)


def bias_shift(
    weight: Tensor, fitted_factors: tuple[Tensor, Tensor], stats: CrossStatistics, beta: float
) -> Tensor:
    """The shift ``(G, K)`` to add to a refitted layer's bias so that its mean output on the
    calibration rows equals the mean target: ``((1 − β)·μ' + β·μ) W − μ' A B``."""
    a, b = fitted_factors
    w = weight.to(device=stats.prop_sum.device, dtype=_F64)
    mu_p = stats.prop_sum / max(stats.rows, 1)
    mu_d = stats.dense_sum / max(stats.rows, 1)
    target = ((1.0 - beta) * mu_p + beta * mu_d)[:, None, :] @ w
    got = (mu_p[:, None, :] @ a.to(_F64)) @ b.to(_F64)
    return (target - got)[:, 0, :]


@torch.no_grad()
def correct_bias(
    small: nn.Module, weight: Tensor, dec: LayerDecomposition, rank: int,
    stats: CrossStatistics, beta: float,
) -> float | None:  # fmt: skip
    """Add :func:`bias_shift` to an installed factorized layer's bias (in place).

    Args:
        small: the installed low-rank module (its second factor holds the bias).
        weight: the dense layer's ``W`` ``(G, D, K)``.
        dec: the decomposition ``small`` was built from, at ``rank``.
        stats: the layer's paired statistics.
        beta: target blend.

    Returns:
        The norm of the shift, or ``None`` when the layer has no bias.
    """
    bias = getattr(getattr(small, "second", None), "bias", None)
    if bias is None:
        return None
    shift = bias_shift(weight, dec.factors(weight, rank), stats, beta).reshape(-1)
    bias.add_(shift.to(device=bias.device, dtype=bias.dtype))
    return float(shift.norm())
