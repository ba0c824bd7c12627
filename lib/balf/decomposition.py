"""Per-layer decompositions, computed once and truncated to any rank (method §2 and §6).

A :class:`LayerDecomposition` holds, in float64, the spectrum ``σ²`` (``(G, R)``, descending) and a
basis from which the factors ``A_g`` (D×r) and ``B_g`` (r×K) of any rank ``r`` are sliced:

* output form: ``A_g = W_g V_r diag(a_r)``, ``B_g = diag(b_r) V_rᵀ`` with ``V`` (G, K, R);
* input form:  ``A_g = L_r``, ``B_g = P_r W_g`` with ``L`` (G, D, R) and ``P`` (G, R, D).

Storing bases instead of factors keeps the memory at the smaller side squared per layer.

Activation-aware (statistics given):
    output route — eigendecomposition of ``Γ_g = Y_gᵀY_g`` (K×K): ``A = W V_r``, ``B = V_rᵀ``;
    input route — whitening: ``C_g = QΛQᵀ``, ``S = Λ^{1/2}Qᵀ`` (eigenvalues below a relative
    tolerance dropped), eigendecomposition ``S W Wᵀ Sᵀ = U Σ² Uᵀ``: ``A = S⁺ U_r Σ_r^{1/2}``,
    ``B = Σ_r^{-1/2} U_rᵀ S W = Σ_r^{1/2} V_rᵀ``.
Both give ``Ŵ_g = W_g V_r V_rᵀ`` on the data's row space, the Eckart–Young optimum of
``‖X_g W_g − X_g Ŵ_g‖_F``, whose squared error is ``Σ_{i>r} σ_{g,i}²``.

Plain SVD (data-free): ``W_g = U Σ Vᵀ``, ``A = U_r Σ_r^{1/2}``, ``B = Σ_r^{1/2} V_rᵀ``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from balf.calibration.statistics import LayerStatistics
from balf.errors import StatisticsError
from balf.layers.dispatch import dense_weight, geometry_of, weight_matrices

__all__ = ["LayerDecomposition", "decompose_layer"]

_F64 = torch.float64


@dataclass
class LayerDecomposition:
    """Rank-truncatable factorization of one layer.

    Attributes:
        route: ``"output"`` or ``"input"`` form (see module docstring).
        activation_aware: whether ``sigma2`` are output (True) or weight (False) spectra.
        sigma2: ``(G, R)`` squared singular values, descending, float64.
        basis: output form ``V`` (G, K, R); input form ``L`` (G, D, R).
        left_scale: output form ``a`` (G, R), else ``None``.
        right_scale: output form ``b`` (G, R), else ``None``.
        projection: input form ``P`` (G, R, D), else ``None``.
    """

    route: str
    activation_aware: bool
    sigma2: Tensor
    basis: Tensor
    left_scale: Tensor | None = None
    right_scale: Tensor | None = None
    projection: Tensor | None = None

    @property
    def max_rank(self) -> int:
        """R, the number of available ranks."""
        return self.sigma2.shape[1]

    def energies(self) -> Tensor:
        """``e(r)`` for r = 1..R, shape ``(R,)``: fraction of the spectrum's energy kept.

        ``e(R) = 1`` exactly; a layer whose spectrum is all zero has ``e ≡ 1``.
        """
        cumulative = self.sigma2.sum(0).cumsum(0)
        if cumulative[-1] <= 0:
            return torch.ones_like(cumulative)
        return cumulative / cumulative[-1]

    def factors(self, weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
        """The rank-``rank`` factors.

        Args:
            weight: the layer's weight matrices ``W_g``, ``(G, D, K)``.
            rank: 1 ≤ rank ≤ R.

        Returns:
            ``A`` ``(G, D, rank)`` and ``B`` ``(G, rank, K)`` in float64, with ``A_g B_g ≈ W_g``.
        """
        if not 1 <= rank <= self.max_rank:
            raise ValueError(f"rank must be in [1, {self.max_rank}], got {rank}")
        w = weight.to(device=self.basis.device)  # float64 one slice at a time (wide layers)
        if self.route == "output":
            v = self.basis[:, :, :rank]
            a = _f64_matmul(w, v, along_rows=True) * self.left_scale[:, None, :rank]
            b = (v * self.right_scale[:, None, :rank]).transpose(1, 2)
            return a, b
        return self.basis[:, :, :rank], _f64_matmul(self.projection[:, :rank], w)

    def to_state(self) -> dict:
        """Plain dict of tensors/strings for ``torch.save`` (cache)."""
        return {k: v for k, v in self.__dict__.items()}

    @classmethod
    def from_state(cls, state: dict) -> LayerDecomposition:
        """Inverse of :meth:`to_state`."""
        return cls(**state)


#: Elements of a weight converted to float64 at once (64 MiB): a wide layer (a language model's
#: output head, 32000 × 2048 and more) is never held in float64 whole.
_F64_SLICE = 1 << 23


def _f64_matmul(a: Tensor, b: Tensor, along_rows: bool = False) -> Tensor:
    """``a @ b`` in float64 (batched), the weight converted to float64 a slice at a time.

    The weight is ``b`` (sliced along its columns), or ``a`` when ``along_rows`` (sliced along
    its rows); the other operand is float64 already.
    """
    weight = a if along_rows else b
    if weight.numel() <= _F64_SLICE:
        return a.to(_F64) @ b.to(_F64)
    axis = 1 if along_rows else 2
    step = max(1, _F64_SLICE // max(1, weight.numel() // weight.shape[axis]))
    shape = (a.shape[0], a.shape[1], b.shape[2])
    out = torch.empty(shape, dtype=_F64, device=weight.device)
    for start in range(0, weight.shape[axis], step):
        part = slice(start, start + step)
        if along_rows:
            out[:, part] = a[:, part].to(_F64) @ b
        else:
            out[:, :, part] = a @ b[:, :, part].to(_F64)
    return out


def _row_gram(w: Tensor) -> Tensor:
    """``W Wᵀ`` ``(G, D, D)`` in float64 of ``w`` ``(G, D, K)``, summed over column slices."""
    step = max(1, _F64_SLICE // max(1, w.shape[0] * w.shape[1]))
    gram = torch.zeros(w.shape[0], w.shape[1], w.shape[1], dtype=_F64, device=w.device)
    for start in range(0, w.shape[2], step):
        part = w[:, :, start : start + step].to(_F64)
        gram += part @ part.transpose(1, 2)
    return gram


def _descending_eigh(m: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues ``(G, n)`` (clamped at 0, descending) and eigenvectors ``(G, n, n)``."""
    evals, evecs = torch.linalg.eigh(m)
    return evals.flip(-1).clamp_min(0), evecs.flip(-1)


def _safe_rsqrt(x: Tensor) -> Tensor:
    """``x^{-1/2}`` where ``x`` is above a relative tolerance of its row maximum, else 0."""
    tol = x.shape[-1] * torch.finfo(x.dtype).eps * x.amax(-1, keepdim=True)
    keep = x > tol
    return torch.where(keep, x.clamp_min(torch.finfo(x.dtype).tiny).rsqrt(), torch.zeros_like(x))


def _output_route(gram: Tensor, r_max: int) -> LayerDecomposition:
    sigma2, v = _descending_eigh(gram)
    ones = torch.ones_like(sigma2[:, :r_max])
    return LayerDecomposition(
        "output", True, sigma2[:, :r_max], v[:, :, :r_max].contiguous(), ones, ones
    )


def _input_route(w: Tensor, gram: Tensor, r_max: int) -> LayerDecomposition:
    # every D×D work array is freed as soon as it is used: the peak is about five of them (the
    # eigendecomposition's input, output and workspace, and Q), whatever the layer's width
    lam, q = _descending_eigh(gram)  # C = Q Λ Qᵀ
    inv_sqrt_lam = _safe_rsqrt(lam)
    sqrt_lam = torch.where(inv_sqrt_lam > 0, lam.sqrt(), torch.zeros_like(lam))
    s = sqrt_lam[:, :, None] * q.transpose(1, 2)  # S = Λ^{1/2} Qᵀ                (G, D, D)
    # S W Wᵀ Sᵀ = U Σ² Uᵀ, with W Wᵀ (G, D, D) summed over column slices: S W (G, D, K) is never
    # formed, which for a wide layer (K ≫ D) would be the largest array of the decomposition
    m = s @ _row_gram(w)
    m = m @ s.transpose(1, 2)
    del s
    sigma2, u = _descending_eigh(m)
    del m
    sigma2, u = sigma2[:, :r_max], u[:, :, :r_max]
    inv_sqrt_sigma = _safe_rsqrt(sigma2).sqrt()  # Σ^{-1/2}, 0 on the null space
    sqrt_sigma = torch.where(inv_sqrt_sigma > 0, sigma2.sqrt().sqrt(), torch.zeros_like(sigma2))
    # S⁺ U Σ^{1/2} with S⁺ = Q (Λ^{1/2})⁺                                        (G, D, R)
    left = (q * inv_sqrt_lam[:, None, :]) @ u * sqrt_sigma[:, None, :]
    # Σ^{-1/2} Uᵀ S = Σ^{-1/2} (Uᵀ Λ^{1/2}) Qᵀ                                   (G, R, D)
    projection = (u.transpose(1, 2) * sqrt_lam[:, None, :]) @ q.transpose(1, 2)
    projection *= inv_sqrt_sigma[:, :, None]
    return LayerDecomposition("input", True, sigma2, left, projection=projection)


def _plain_svd(w: Tensor) -> LayerDecomposition:
    u, sigma, vh = torch.linalg.svd(w, full_matrices=False)  # (G,D,R) (G,R) (G,R,K)
    sigma2 = sigma.square()
    inv_sqrt = _safe_rsqrt(sigma2).sqrt()  # Σ^{-1/2}
    sqrt = sigma.sqrt()
    if w.shape[1] >= w.shape[2]:
        return LayerDecomposition(
            "output", False, sigma2, vh.transpose(1, 2).contiguous(), inv_sqrt, sqrt
        )
    return LayerDecomposition(
        "input",
        False,
        sigma2,
        u * sqrt[:, None, :],
        projection=inv_sqrt[:, :, None] * u.transpose(1, 2),
    )


def decompose_layer(
    module: nn.Module, statistics: LayerStatistics | None = None
) -> LayerDecomposition:
    """Decompose one layer: activation-aware from its statistics, or plain SVD when ``None``.

    The route follows the side the statistics were collected on (input Gram → whitening route,
    output Gram → output route). Computed in float64 on the statistics' device.

    Raises:
        StatisticsError: the statistics' shape does not match the layer.
    """
    geo = geometry_of(module)
    device = statistics.gram.device if statistics is not None else dense_weight(module).device
    w = weight_matrices(module).to(device=device)  # float64 where used (wide layers: by slices)
    if statistics is None:
        return _plain_svd(w.to(_F64))
    size = geo.in_dim if statistics.side == "input" else geo.out_dim
    expected = (geo.groups, size, size)
    if tuple(statistics.gram.shape) != expected:
        raise StatisticsError(
            f"statistics of shape {tuple(statistics.gram.shape)} do not match the layer "
            f"({statistics.side} side expects {expected}); recollect them for this model"
        )
    gram = statistics.gram.to(_F64)
    if statistics.side == "output":
        return _output_route(gram, geo.max_rank)
    return _input_route(w, gram, geo.max_rank)
