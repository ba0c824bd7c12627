"""Per-layer decompositions, computed once and truncated to any rank (method §2 and §6).

A :class:`LayerDecomposition` holds, in float64, the spectrum ``σ²`` (``(G, R)``, descending) and a
basis from which the factors ``A_g`` (D×r) and ``B_g`` (r×K) of any rank ``r`` are sliced:

* output form: ``A_g = W_g V_r diag(a_r)``, ``B_g = diag(b_r) V_rᵀ`` with ``V`` (G, K, R);
* input form:  ``A_g = L_r``, ``B_g = P_r W_g`` with ``L`` (G, D, R) and ``P`` (G, R, D).

Storing bases instead of factors keeps the memory at the smaller side squared per layer.

Activation-aware (statistics given):
    output route — eigendecomposition of ``Γ_g = Y_gᵀY_g`` (K×K): ``A = W V_r``, ``B = V_rᵀ``;
    input route — whitening ``C_g = SᵀS`` (Cholesky ``S = Lᵀ`` for a well-conditioned ``C_g``,
    else ``C_g = QΛQᵀ``, ``S = Λ^{1/2}Qᵀ`` with eigenvalues below a relative tolerance dropped),
    eigendecomposition ``S W Wᵀ Sᵀ = U Σ² Uᵀ``: ``A = S⁺ U_r Σ_r^{1/2}``,
    ``B = Σ_r^{-1/2} U_rᵀ S W = Σ_r^{1/2} V_rᵀ``; layers reading the same input share ``S``
    (:func:`decompose_layers`).
Both give ``Ŵ_g = W_g V_r V_rᵀ`` on the data's row space, the Eckart–Young optimum of
``‖X_g W_g − X_g Ŵ_g‖_F``, whose squared error is ``Σ_{i>r} σ_{g,i}²``.

Plain SVD (data-free): ``W_g = U Σ Vᵀ``, ``A = U_r Σ_r^{1/2}``, ``B = Σ_r^{1/2} V_rᵀ``.

Energies only (:func:`layer_energies`): the same spectrum without the basis, from the
eigenvalues of the same matrix (``Γ_g``, or ``S W Wᵀ Sᵀ`` after the same whitening) in the same
precision, for a caller that needs only the energy curve (block by block's allocation pass).

Precision (:mod:`balf._spectral`): products in float64; the spectral eigendecomposition (of
``Γ_g`` or ``S W Wᵀ Sᵀ``) in float32 for float32-or-narrower layers whose spectrum passes a cheap
check, float64 otherwise; whitening always in float64.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from balf._spectral import (
    Whitening,
    descending_eigh,
    descending_eigvalsh,
    safe_rsqrt,
    spectral_dtype,
)
from balf.calibration.statistics import LayerStatistics, Statistics
from balf.errors import StatisticsError
from balf.layers._grams import gram_2d
from balf.layers.dispatch import dense_weight, geometry_of, weight_matrices

__all__ = ["LayerDecomposition", "decompose_layer", "decompose_layers", "layer_energies"]

log = logging.getLogger(__name__)

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
        return _energy_curve(self.sigma2)

    def factors(self, weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
        """The rank-``rank`` factors.

        Args:
            weight: the layer's weight matrices ``W_g``, ``(G, D, K)``.
            rank: 1 ≤ rank ≤ R.

        Returns:
            ``A`` ``(G, D, rank)`` and ``B`` ``(G, rank, K)``, with ``A_g B_g ≈ W_g``: in float64
            for a float64 weight (the weight converted a slice at a time), else in float32, the
            product with the weight computed in float32 (its rounding is of the order of the
            float32 layer's own arithmetic, and no float64 copy of a wide factor is made).
        """
        if not 1 <= rank <= self.max_rank:
            raise ValueError(f"rank must be in [1, {self.max_rank}], got {rank}")
        w = weight.to(device=self.basis.device)
        if w.dtype == _F64:
            matmul, dtype = _f64_matmul, _F64
        else:
            matmul, dtype = _f32_matmul, torch.float32
        if self.route == "output":
            v = self.basis[:, :, :rank].to(dtype)
            a = matmul(w, v, along_rows=True) * self.left_scale[:, None, :rank].to(dtype)
            b = (v * self.right_scale[:, None, :rank].to(dtype)).transpose(1, 2)
            return a, b
        return self.basis[:, :, :rank].to(dtype), matmul(self.projection[:, :rank], w)

    def to_state(self) -> dict:
        """Plain dict of tensors/strings for ``torch.save`` (cache)."""
        return {k: v for k, v in self.__dict__.items()}

    @classmethod
    def from_state(cls, state: dict) -> LayerDecomposition:
        """Inverse of :meth:`to_state`."""
        return cls(**state)


def _energy_curve(sigma2: Tensor) -> Tensor:
    """``e(r)`` ``(R,)`` of the descending spectra ``sigma2`` ``(G, R)`` (summed over groups)."""
    cumulative = sigma2.sum(0).cumsum(0)
    if cumulative[-1] <= 0:
        return torch.ones_like(cumulative)
    return cumulative / cumulative[-1]


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


def _f32_matmul(a: Tensor, b: Tensor, along_rows: bool = False) -> Tensor:
    """``a @ b`` in float32 (a float32-or-narrower weight and a float64 basis)."""
    del along_rows  # no slicing: the float32 operands are no larger than the weight
    return a.to(torch.float32) @ b.to(torch.float32)


def _row_gram(w: Tensor) -> Tensor:
    """``W Wᵀ`` ``(G, D, D)`` in float64 of ``w`` ``(G, D, K)``, summed over column slices
    (each slice's upper triangle by panels, :func:`balf.layers._grams.gram_2d`)."""
    step = max(1, _F64_SLICE // max(1, w.shape[0] * w.shape[1]))
    gram = torch.zeros(w.shape[0], w.shape[1], w.shape[1], dtype=_F64, device=w.device)
    for start in range(0, w.shape[2], step):
        part = w[:, :, start : start + step].to(_F64)
        if w.shape[1] < 256:  # narrow groups (grouped convolutions): one batched product
            gram += part @ part.transpose(1, 2)
            continue
        for g in range(w.shape[0]):
            gram[g] += gram_2d(part[g].transpose(0, 1))
    return gram


def _output_route(gram: Tensor, r_max: int, layer_dtype: torch.dtype) -> LayerDecomposition:
    """Eigendecomposition of ``Γ_g = Y_gᵀY_g`` (K×K): ``A = W V_r``, ``B = V_rᵀ``."""
    sigma2, v = descending_eigh(gram, spectral_dtype(gram, layer_dtype))
    ones = torch.ones_like(sigma2[:, :r_max])
    return LayerDecomposition(
        "output", True, sigma2[:, :r_max], v[:, :, :r_max].contiguous(), ones, ones
    )


def _whitened_row_gram(w: Tensor, whitening: Whitening) -> Tensor:
    """``S W Wᵀ Sᵀ`` ``(G, D, D)`` in float64: ``W Wᵀ`` summed over column slices, so that
    ``S W`` (G, D, K) is never formed (for a wide layer, K ≫ D, the largest array of the
    decomposition)."""
    return whitening.whiten(_row_gram(w))


def _input_route(
    w: Tensor, whitening: Whitening, r_max: int, layer_dtype: torch.dtype
) -> LayerDecomposition:
    """Whitened route from the input Gram ``C = SᵀS`` (``whitening``, shareable among layers
    that read the same input): eigendecomposition ``S W Wᵀ Sᵀ = U Σ² Uᵀ`` (D×D),
    ``A = S⁺ U_r Σ_r^{1/2}`` (G, D, R), ``B = P_r W`` with ``P = Σ^{-1/2} Uᵀ S`` (G, R, D)."""
    m = _whitened_row_gram(w, whitening)
    dtype = spectral_dtype(m, layer_dtype)
    sigma2, u = descending_eigh(m, dtype)
    del m
    sigma2, u = sigma2[:, :r_max], u[:, :, :r_max]
    # Σ^{±1/2} only balances A against B (their product S⁺ U_r U_rᵀ S W does not depend on it):
    # singular values at the eigensolver's rounding floor (or zero) are balanced at the floor,
    # never inverted, and no direction is dropped
    floor = sigma2.shape[-1] * torch.finfo(dtype).eps * sigma2.amax(-1, keepdim=True)
    balance = torch.maximum(sigma2, floor)
    balance = torch.where(balance > 0, balance, torch.ones_like(balance)).sqrt().sqrt()
    left = whitening.solve(u * balance[:, None, :])  # S⁺ U Σ^{1/2}       (G, D, R)
    projection = whitening.left_apply(u.transpose(1, 2))  # Uᵀ S          (G, R, D)
    projection /= balance[:, :, None]  # Σ^{-1/2} Uᵀ S
    return LayerDecomposition("input", True, sigma2, left, projection=projection)


def _plain_svd(w: Tensor) -> LayerDecomposition:
    u, sigma, vh = torch.linalg.svd(w, full_matrices=False)  # (G,D,R) (G,R) (G,R,K)
    sigma2 = sigma.square()
    inv_sqrt = safe_rsqrt(sigma2).sqrt()  # Σ^{-1/2}
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


def _checked_gram(module: nn.Module, statistics: LayerStatistics) -> Tensor:
    geo = geometry_of(module)
    size = geo.in_dim if statistics.side == "input" else geo.out_dim
    expected = (geo.groups, size, size)
    if statistics.gram is None or tuple(statistics.gram.shape) != expected:
        shape = None if statistics.gram is None else tuple(statistics.gram.shape)
        raise StatisticsError(
            f"statistics of shape {shape} do not match the layer "
            f"({statistics.side} side expects {expected}); recollect them for this model"
        )
    return statistics.gram


def _layer_inputs(
    module: nn.Module, statistics: LayerStatistics | None, device: torch.device | str | None
) -> tuple[Tensor, torch.dtype, torch.device | str]:
    """The weight matrices ``(G, D, K)`` (the layer's dtype) on the device to compute on, the
    layer's dtype, and that device (default: the statistics', else the weight's)."""
    weight = dense_weight(module)
    if device is None:
        device = statistics.gram.device if statistics is not None else weight.device
    return weight_matrices(module).to(device=device), weight.dtype, device


def _decompose(
    module: nn.Module,
    statistics: LayerStatistics | None,
    device: torch.device | str | None,
    whitening: Whitening | None = None,
) -> LayerDecomposition:
    w, dtype, device = _layer_inputs(module, statistics, device)  # float64 where used
    if statistics is None:
        return _plain_svd(w.to(_F64))
    gram = _checked_gram(module, statistics).to(device=device, dtype=_F64)
    r_max = geometry_of(module).max_rank
    if statistics.side == "output":
        return _output_route(gram, r_max, dtype)
    if whitening is None:
        whitening = Whitening.of(gram)
    del gram
    return _input_route(w, whitening, r_max, dtype)


def decompose_layer(
    module: nn.Module,
    statistics: LayerStatistics | None = None,
    *,
    device: torch.device | str | None = None,
) -> LayerDecomposition:
    """Decompose one layer: activation-aware from its statistics, or plain SVD when ``None``.

    The route follows the side the statistics were collected on (input Gram → whitening route,
    output Gram → output route). Products are formed in float64; the spectral
    eigendecomposition runs in float32 where :func:`balf._spectral.spectral_dtype` shows it
    safe (float32 or narrower layers, spread spectra), and the whitening is a Cholesky factor
    where the input Gram is well conditioned (see :mod:`balf._spectral`). The result is float64.

    Args:
        module: a supported layer.
        statistics: its :class:`LayerStatistics` (Gram ``(G, S, S)``), or ``None``.
        device: where to compute (default: the statistics' device, else the weight's).

    Raises:
        StatisticsError: the statistics' shape does not match the layer.
    """
    return _decompose(module, statistics, device)


def _spectrum(
    module: nn.Module, statistics: LayerStatistics | None, device: torch.device | str | None
) -> Tensor:
    """:func:`_decompose`'s ``sigma2`` ``(G, R)`` from the eigenvalues alone: the same matrix,
    the same whitening and the same precision, no eigenvectors and no factor products."""
    w, dtype, device = _layer_inputs(module, statistics, device)
    if statistics is None:
        return torch.linalg.svdvals(w.to(_F64)).square()
    gram = _checked_gram(module, statistics).to(device=device, dtype=_F64)
    r_max = geometry_of(module).max_rank
    if statistics.side == "output":
        return descending_eigvalsh(gram, spectral_dtype(gram, dtype))[:, :r_max]
    whitening = Whitening.of(gram)
    del gram
    m = _whitened_row_gram(w, whitening)
    return descending_eigvalsh(m, spectral_dtype(m, dtype))[:, :r_max]


def layer_energies(
    module: nn.Module,
    statistics: LayerStatistics | None = None,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """The energy curve of :func:`decompose_layer`'s result, ``decompose_layer(module,
    statistics).energies()``, without the decomposition: ``e(r)`` for r = 1..R, ``(R,)`` float64.

    The same route, whitening (Cholesky or eigen, by the same condition check) and precision of
    the spectral step (:func:`balf._spectral.spectral_dtype` on the same matrix); only the
    eigenvalues are computed (:func:`balf._spectral.descending_eigvalsh`), so no eigenvectors
    and no factor products (``S⁺ U``, ``Uᵀ S``). The eigensolver without vectors rounds
    differently: the curves agree to within :data:`balf._spectral.F32_ENERGY_TOLERANCE` where the
    spectral step runs in float32, and to 1e-12 where it runs in float64 (property-tested).

    Args:
        module: a supported layer.
        statistics: its :class:`LayerStatistics` (Gram ``(G, S, S)``), or ``None`` (plain SVD:
            the weight's spectrum).
        device: where to compute (default: the statistics' device, else the weight's).

    Raises:
        StatisticsError: the statistics' shape does not match the layer.
    """
    return _energy_curve(_spectrum(module, statistics, device))


def _same_input_groups(
    names: list[str], stats: Mapping[str, LayerStatistics]
) -> dict[str, list[str]]:
    """Input-side layers whose Gram matrices are identical (layers reading the same tensor:
    q/k/v, gate/up, convs on one feature map), by first member; singletons omitted.

    Candidates are bucketed by shape, row count and two sums; a bucket's members are then
    compared exactly (the same tensor, or ``torch.equal``).
    """
    buckets: dict[tuple, list[str]] = {}
    for n in names:
        st = stats[n]
        if st.side != "input" or st.gram is None:
            continue
        g = st.gram
        key = (tuple(g.shape), st.rows, float(g.diagonal(dim1=-2, dim2=-1).sum()), float(g.sum()))
        buckets.setdefault(key, []).append(n)
    groups: dict[str, list[str]] = {}
    for members in buckets.values():
        while len(members) > 1:
            head, rest = members[0], members[1:]
            same = [m for m in rest if _same_tensor(stats[head].gram, stats[m].gram)]
            if same:
                groups[head] = [head, *same]
            members = [m for m in rest if m not in same]
    return groups


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    if a is b or (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()):
        return True
    return a.device == b.device and torch.equal(a, b)


def decompose_layers(
    modules: Mapping[str, nn.Module],
    statistics: Statistics | Mapping[str, LayerStatistics] | None = None,
    *,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict[str, LayerDecomposition]:
    """Decompose many layers, sharing the work of layers that read the same input.

    Layers whose input-side Gram matrices are identical (they read the same tensor: a block's
    q/k/v or gate/up projections, convolutions on one feature map) share one whitening of
    that Gram (:class:`balf._spectral.Whitening`), computed once per group and freed after
    the group's last layer. Each result equals :func:`decompose_layer`'s.

    Args:
        modules: the layers by name.
        statistics: :class:`Statistics` or a mapping name → :class:`LayerStatistics` covering
            ``modules``; ``None`` for plain SVD.
        device: where to compute (default: each layer's statistics' device, else its weight's).
        progress: show a tqdm bar.

    Returns:
        ``{name: LayerDecomposition}`` in the order of ``modules``.

    Example:
        >>> stats = balf.collect_statistics(model, calib_loader, ["q_proj", "k_proj", "v_proj"])
        >>> layers = {n: model.get_submodule(n) for n in stats.layers}
        >>> decompositions = balf.decompose_layers(layers, stats)
    """
    names = list(modules)
    stats = statistics.layers if isinstance(statistics, Statistics) else statistics
    groups = _same_input_groups(names, stats) if stats is not None else {}
    group_of = {m: head for head, members in groups.items() for m in members}
    remaining = {head: len(members) for head, members in groups.items()}
    shared: dict[str, Whitening] = {}
    out = {}
    for name in tqdm(names, desc="decompositions", unit="layer", disable=not progress):
        st = stats[name] if stats is not None else None
        head = group_of.get(name)
        if head is None:
            out[name] = _decompose(modules[name], st, device)
            continue
        if head not in shared:
            gram = _checked_gram(modules[name], st)
            where = device if device is not None else gram.device
            shared[head] = Whitening.of(gram.to(device=where, dtype=_F64))
        out[name] = _decompose(modules[name], st, device, shared[head])
        remaining[head] -= 1
        if remaining[head] == 0:
            del shared[head]
    if groups:
        log.debug("shared input whitening: %s", {h: len(m) for h, m in groups.items()})
    return out
