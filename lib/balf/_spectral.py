"""Numerics of the decompositions: which precision an eigendecomposition runs in, and whitening.

Two choices make the per-layer decompositions cheap without giving up the Eckart–Young optimum
(method §2) beyond a stated tolerance:

* **The spectral step in float32** (the eigendecomposition of ``Γ = YᵀY``, or of the whitened
  ``S W Wᵀ Sᵀ``): a symmetric eigensolver is backward stable, so in float32 it returns the
  exact eigenpairs of a matrix within a small multiple of ``eps32·‖M‖`` of ``M``. The
  activation error of the truncated layer then exceeds the bound ``Σ_{i>r} σ_i²``, and each
  energy ``e(r)`` moves, by about that much. Measured over spectra with a few directions 10²
  to 10⁶ times above the rest (n = 512 and 2048), both stayed below
  ``1.13·√n·eps32·‖M‖_F / tr(M)``; :func:`spectral_dtype` allows float32 where twice that
  floor is at most :data:`F32_ENERGY_TOLERANCE` — a check that costs one pass over ``M``
  (flat spectra, where the measured ratio reaches 2.6, have a floor of ``eps32`` and pass
  with a wide margin). Very wide layers with spiky spectra (outlier features) fail it
  and stay in float64; so do float64 layers (whose users asked for float64 accuracy).
* **Whitening by Cholesky** (input route): any ``S`` with ``SᵀS = C`` whitens ``C = XᵀX``; the
  Cholesky factor ``C = L Lᵀ`` (``S = Lᵀ``) costs about a fifteenth of an eigendecomposition.
  It is used when ``C`` is well conditioned — Cholesky succeeds and a condition estimate
  (:func:`condition_estimate`: ``tr(C)/λ_min`` with ``λ_min`` from a few steps of inverse
  iteration, never below the square of the ratio of ``L``'s extreme diagonal entries) is at
  most :data:`CHOLESKY_MAX_CONDITION`, where its float64 rounding errors change the solution by
  less than ``D·eps64·κ`` relatively. Otherwise (rank-deficient or ill-conditioned ``C``: fewer
  rows than ``D``, dead or duplicated channels) the float64 eigendecomposition ``C = QΛQᵀ`` with
  eigenvalues below a relative tolerance dropped, as the paper does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "CHOLESKY_MAX_CONDITION",
    "F32_ENERGY_TOLERANCE",
    "Whitening",
    "condition_estimate",
    "descending_eigh",
    "descending_eigvalsh",
    "safe_rsqrt",
    "spectral_dtype",
]

_F64 = torch.float64
_F32 = torch.float32

#: Largest share of a layer's output energy that the float32 spectral step may add to the
#: Eckart–Young bound (and its largest error on an energy ``e(r)``); property-tested.
F32_ENERGY_TOLERANCE = 1e-5

_F32_SAFETY = 2.0

#: Largest estimated condition number of ``C`` whitened by its Cholesky factor.
CHOLESKY_MAX_CONDITION = 1e10

_INVERSE_ITERATIONS = 8


def spectral_dtype(m: Tensor, layer_dtype: torch.dtype) -> torch.dtype:
    """float32 or float64 for the eigendecomposition of the PSD matrices ``m`` ``(G, n, n)``.

    float32 when the layer is float32 or narrower and, for every group,
    ``2·√n·eps32·‖M‖_F ≤ F32_ENERGY_TOLERANCE·tr(M)`` (the float32 rounding floor is a negligible
    share of the output energy); float64 otherwise.
    """
    if layer_dtype == _F64:
        return _F64
    n = m.shape[-1]
    trace = m.diagonal(dim1=-2, dim2=-1).sum(-1)
    frobenius = torch.linalg.matrix_norm(m)
    floor = _F32_SAFETY * n**0.5 * torch.finfo(_F32).eps * frobenius
    return _F32 if bool((floor <= F32_ENERGY_TOLERANCE * trace).all()) else _F64


def descending_eigh(m: Tensor, dtype: torch.dtype = _F64) -> tuple[Tensor, Tensor]:
    """Eigenvalues ``(G, n)`` (clamped at 0, descending) and eigenvectors ``(G, n, n)`` of the
    symmetric ``m``, computed in ``dtype`` and returned in float64."""
    evals, evecs = torch.linalg.eigh(m.to(dtype))
    return evals.flip(-1).clamp_min(0).to(_F64), evecs.flip(-1).to(_F64)


def descending_eigvalsh(m: Tensor, dtype: torch.dtype = _F64) -> Tensor:
    """The eigenvalues ``(G, n)`` of :func:`descending_eigh` without the eigenvectors (clamped at
    0, descending, computed in ``dtype``, returned in float64).

    The eigensolver without vectors is a different algorithm (on a CPU, LAPACK's ``sterf``
    instead of the divide and conquer ``stedc``): its eigenvalues equal those of
    :func:`descending_eigh` to the eigensolver's rounding, a small multiple of
    ``eps(dtype)·‖M‖``, not bit for bit; on a CPU it costs about a third as much.
    """
    return torch.linalg.eigvalsh(m.to(dtype)).flip(-1).clamp_min(0).to(_F64)


def safe_rsqrt(x: Tensor, dtype: torch.dtype = _F64) -> Tensor:
    """``x^{-1/2}`` where ``x`` is above ``n·eps(dtype)`` of its row maximum, else 0.

    ``dtype`` is the precision ``x`` was computed in (its rounding floor).
    """
    tol = x.shape[-1] * torch.finfo(dtype).eps * x.amax(-1, keepdim=True)
    keep = x > tol
    return torch.where(keep, x.clamp_min(torch.finfo(x.dtype).tiny).rsqrt(), torch.zeros_like(x))


def condition_estimate(gram: Tensor, chol: Tensor) -> float:
    """An estimate of the largest condition number of the ``(G, D, D)`` ``gram`` from its
    Cholesky factor ``chol``, in ``O(D²)`` per group.

    ``tr(C)/λ̂_min`` (``tr(C) ≥ λ_max``; ``λ̂_min`` from :data:`_INVERSE_ITERATIONS` steps of
    inverse iteration from a seeded random start), and at least ``(max L_ii / min L_ii)²``,
    a lower bound of the condition number.
    """
    diag = chol.diagonal(dim1=-2, dim2=-1)
    if not bool((diag > 0).all()):
        return float("inf")
    lower = float(((diag.amax(-1) / diag.amin(-1)) ** 2).max())
    g = torch.Generator(device=gram.device).manual_seed(0)
    x = torch.randn(*gram.shape[:-1], 1, generator=g, device=gram.device, dtype=gram.dtype)
    growth = torch.ones(gram.shape[0], dtype=gram.dtype, device=gram.device)
    for _ in range(_INVERSE_ITERATIONS):
        x = x / x.norm(dim=1, keepdim=True)
        x = torch.cholesky_solve(x, chol)
        growth = x.norm(dim=1).squeeze(-1)  # ‖C⁻¹x‖ → 1/λ_min
    trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1)
    estimate = float((trace * growth).max())
    if estimate != estimate:  # NaN
        return float("inf")
    return max(lower, estimate)


@dataclass
class Whitening:
    """A factor ``S`` (``(G, D, D)``) with ``SᵀS = C`` on the data's row space, from ``C = XᵀX``.

    Cholesky form: ``S = Lᵀ`` (``chol`` = ``L``, lower). Eigen form: ``S = Λ^{1/2} Qᵀ`` with the
    eigenvalues below a relative tolerance dropped (``q``, ``sqrt_lam``, ``inv_sqrt_lam``).
    """

    chol: Tensor | None = None
    q: Tensor | None = None
    sqrt_lam: Tensor | None = None
    inv_sqrt_lam: Tensor | None = None

    @property
    def kind(self) -> str:
        """``"cholesky"`` or ``"eigen"``."""
        return "cholesky" if self.chol is not None else "eigen"

    @classmethod
    def of(cls, gram: Tensor) -> Whitening:
        """Whitening of the float64 ``(G, D, D)`` Gram matrices ``gram`` (see the module doc)."""
        chol, info = torch.linalg.cholesky_ex(gram)
        if bool((info == 0).all()) and condition_estimate(gram, chol) <= CHOLESKY_MAX_CONDITION:
            return cls(chol=chol)
        del chol
        lam, q = descending_eigh(gram)  # C = Q Λ Qᵀ
        inv_sqrt_lam = safe_rsqrt(lam)
        sqrt_lam = torch.where(inv_sqrt_lam > 0, lam.sqrt(), torch.zeros_like(lam))
        return cls(q=q, sqrt_lam=sqrt_lam, inv_sqrt_lam=inv_sqrt_lam)

    def whiten(self, m: Tensor) -> Tensor:
        """``S m Sᵀ`` for symmetric ``m`` ``(G, D, D)``."""
        if self.chol is not None:
            return _lt_m_l(m, self.chol)
        s = self.sqrt_lam[:, :, None] * self.q.transpose(1, 2)
        return s @ m @ s.transpose(1, 2)

    def solve(self, x: Tensor) -> Tensor:
        """``S⁺ x`` for ``x`` ``(G, D, R)`` (the pseudo-inverse on the dropped eigenvalues)."""
        if self.chol is not None:
            return torch.linalg.solve_triangular(self.chol.transpose(1, 2), x, upper=True)
        return (self.q * self.inv_sqrt_lam[:, None, :]) @ x

    def left_apply(self, ut: Tensor) -> Tensor:
        """``Uᵀ S`` for ``ut`` = ``Uᵀ`` ``(G, R, D)``."""
        if self.chol is not None:
            return ut @ self.chol.transpose(1, 2)
        return (ut * self.sqrt_lam[:, None, :]) @ self.q.transpose(1, 2)


def _panels(d: int, width: int = 128, most: int = 16) -> list[tuple[int, int]]:
    """``(start, end)`` of up to ``most`` column panels of at least ``width`` columns."""
    n = max(1, min(most, d // width))
    edges = [round(i * d / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _lt_m_l(m: Tensor, chol: Tensor) -> Tensor:
    """``Lᵀ M L`` ``(G, D, D)`` for symmetric ``m`` and lower-triangular ``chol`` = ``L``.

    By column panels, skipping the zero blocks of ``L``: ``T = M L`` reads ``M[:, a:]`` for the
    columns ``a:b`` and the upper triangle of ``Lᵀ T`` reads ``T[a:, a:]`` for the rows ``a:b``
    (the lower triangle is its transpose): about 0.9 of one ``D³`` product instead of two.
    """
    panels = _panels(m.shape[-1])
    t = torch.empty_like(m)
    for a, b in panels:
        t[:, :, a:b] = m[:, :, a:] @ chol[:, a:, a:b]
    out = torch.empty_like(m)
    for a, b in panels:
        block = chol[:, a:, a:b].transpose(1, 2) @ t[:, a:, a:]  # rows a:b, columns a:
        out[:, a:b, a:] = block
        out[:, b:, a:b] = block[:, :, b - a :].transpose(1, 2)
    return out
