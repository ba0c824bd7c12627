"""FLOP formulas of fused attention kernels, counted as the math they do.

``torch.utils.flop_counter.FlopCounterMode`` counts matrix products (``mm``, ``bmm``,
convolutions, ...) and the CUDA attention kernels. Several fused paths reach it as one opaque
operator it has no formula for, and so count as 0 FLOPs:

* ``aten._scaled_dot_product_flash_attention_for_cpu``: ``F.scaled_dot_product_attention`` on
  the CPU (timm's fused attention, Hugging Face ``attn_implementation="sdpa"``);
* ``aten._native_multi_head_attention``: ``nn.MultiheadAttention``'s inference fast path, which
  also hides the input and output projections (torchvision's ViT);
* ``aten._transformer_encoder_layer_fwd``: ``nn.TransformerEncoderLayer``'s fast path (attention
  and feed-forward block);
* the other SDPA back-ends (``_scaled_dot_product_fused_attention_overrideable``, the MPS math
  kernel), and the CUDA ones again with grouped-query attention (fewer key/value heads than query
  heads, where torch's own formula asserts equal head counts).

Each formula returns the FLOPs of the unfused computation (a multiply-add counts 2): the two
attention products ``Q·Kᵀ`` and ``P·V`` over every query/key pair (a causal mask is not
discounted: the unfused path multiplies full matrices too) plus, for the fast paths, the
projections. :func:`attention_flop_formulas` is passed as ``custom_mapping`` to
``FlopCounterMode`` by :func:`balf.count_flops`; nothing global is changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["attention_flop_formulas"]

aten = torch.ops.aten


def _sequences(t: Tensor) -> list[tuple[int, ...]]:
    """The shape of each sequence: a nested (ragged) tensor's components, else ``[t.shape]``.

    A nested tensor (``nn.TransformerEncoder``'s fast path with a padding mask) holds one
    sequence per component, of its own length: attention is counted per sequence, never across
    the sequences of a batch as if they were one.
    """
    if t.is_nested:
        return [tuple(int(s) for s in size) for size in t._nested_tensor_size()]
    return [tuple(t.shape)]


def _sdpa_flops(query: tuple[int, ...], key: tuple[int, ...], value: tuple[int, ...]) -> int:
    """``Q·Kᵀ`` and ``P·V`` for ``(…, H_q, L_q, E)`` queries and ``(…, H_kv, L_k, E/E_v)`` keys
    and values (grouped-query attention: each key/value head serves ``H_q/H_kv`` query heads)."""
    *batch, l_q, e = query
    l_k, e_v = key[-2], value[-1]
    n = 1
    for d in batch:  # batch × query heads
        n *= d
    return 2 * n * l_q * l_k * e + 2 * n * l_q * l_k * e_v


def _sdpa(query: Tensor, key: Tensor, value: Tensor, *args: Any, out_val: Any = None, **kw: Any):
    parts = zip(_sequences(query), _sequences(key), _sequences(value), strict=True)
    return sum(_sdpa_flops(q, k, v) for q, k, v in parts)


def _rows(shape: tuple[int, ...]) -> int:
    """Rows (tokens over the batch) of a ``(B, L, E)`` or ``(L, E)`` input."""
    rows = 1
    for d in shape[:-1]:
        rows *= d
    return rows


def _tokens_and_width(x: Tensor) -> tuple[int, int]:
    """Rows (tokens over the batch and every sequence) and width of an input."""
    shapes = _sequences(x)
    return sum(_rows(s) for s in shapes), shapes[0][-1]


def _mha_flops(query: Tensor, key: Tensor, value: Tensor, embed_dim: int) -> int:
    """Input projections of ``query``/``key``/``value``, attention, output projection."""
    n_q, e_q = _tokens_and_width(query)
    n_k, e_k = _tokens_and_width(key)
    n_v, e_v = _tokens_and_width(value)
    projections = 2 * embed_dim * (n_q * e_q + n_k * e_k + n_v * e_v) + 2 * n_q * embed_dim**2
    attention = 0
    for q_shape, k_shape in zip(_sequences(query), _sequences(key), strict=True):
        l_q = q_shape[-2] if len(q_shape) > 1 else 1
        l_k = k_shape[-2] if len(k_shape) > 1 else 1
        batch = _rows(q_shape) // max(l_q, 1)
        attention += 2 * 2 * batch * l_q * l_k * embed_dim  # summed over heads: H·(E/H) = E
    return projections + attention


def _native_mha(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    embed_dim: int,
    num_head: int,
    *args: Any,
    out_val: Any = None,
    **kw: Any,
) -> int:
    return _mha_flops(query, key, value, embed_dim)


def _encoder_layer(
    src: Tensor,
    embed_dim: int,
    num_heads: int,
    qkv_weight: Tensor,
    qkv_bias: Tensor,
    proj_weight: Tensor,
    proj_bias: Tensor,
    use_gelu: bool,
    norm_first: bool,
    eps: float,
    norm_weight_1: Tensor,
    norm_bias_1: Tensor,
    norm_weight_2: Tensor,
    norm_bias_2: Tensor,
    ffn_weight_1: Tensor,
    *args: Any,
    out_val: Any = None,
    **kw: Any,
) -> int:
    rows, _ = _tokens_and_width(src)
    hidden = ffn_weight_1.shape[0]
    return _mha_flops(src, src, src, embed_dim) + 2 * 2 * rows * embed_dim * hidden


def _raw(formula: Callable[..., int]) -> Callable[..., int]:
    """Mark a formula as taking the tensors themselves (``FlopCounterMode``'s ``_get_raw``)."""
    formula._get_raw = True  # type: ignore[attr-defined]
    return formula


def attention_flop_formulas() -> dict[Any, Callable[..., int]]:
    """``custom_mapping`` for ``FlopCounterMode``: fused attention operators → FLOP formulas.

    Returns:
        ``{operator overload packet: formula(*op args, out_val=...) -> FLOPs}``; operators this
        torch build lacks are left out.
    """
    names = {
        "_scaled_dot_product_flash_attention_for_cpu": _sdpa,
        "_scaled_dot_product_flash_attention": _sdpa,
        "_scaled_dot_product_efficient_attention": _sdpa,
        "_scaled_dot_product_cudnn_attention": _sdpa,
        "_scaled_dot_product_fused_attention_overrideable": _sdpa,
        "_scaled_dot_product_attention_math_for_mps": _sdpa,
        "_native_multi_head_attention": _native_mha,
        "_transformer_encoder_layer_fwd": _encoder_layer,
    }
    out: dict[Any, Callable[..., int]] = {}
    for name, formula in names.items():
        op = getattr(aten, name, None)
        if op is not None:
            out[op] = _raw(formula)
    return out
