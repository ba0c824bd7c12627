"""``nn.MultiheadAttention`` with its projections as called ``nn.Linear`` modules.

``nn.MultiheadAttention`` keeps its input projection as a packed ``in_proj_weight`` ``(3E, E)``
(or three ``q/k/v_proj_weight``) and uses it, and ``out_proj.weight``, through
``F.multi_head_attention_forward`` or its fused inference kernel: no projection is ever called
as a module, so no forward hook sees it and no module can be swapped in for it.

:class:`UnpackedMultiheadAttention` computes the same function with the projections as child
modules it calls: ``in_proj`` (``nn.Linear(E, 3E)``, the packed weight, factorized jointly for
query, key and value as timm's ``qkv``) or ``q_proj``/``k_proj``/``v_proj`` (separate weights,
``kdim``/``vdim`` inputs), and ``out_proj``. :meth:`UnpackedMultiheadAttention.from_mha` builds it
*sharing* the attention's parameters (no copy), so balf can:

* collect statistics with the attention temporarily unpacked (:func:`temporarily_unpacked`: the
  caller's model is restored, the same unpacked modules are reused on every swap);
* install low-rank projections in a compressed copy, unpacked for good (:func:`unpack_attention`);
* rebuild that structure from a save (``balf.load`` unpacks the attention modules named by the
  saved layers).

With cross-attention and a packed weight (``key`` is not ``query``), ``in_proj`` is called once
per distinct input and the needed third of its output kept, so its statistics cover every input
it projects. Attention with ``add_bias_kv`` or ``add_zero_attn`` (and subclasses of
``nn.MultiheadAttention``, whose forward may differ) is left packed: its projections are listed
as skipped with :func:`unpack_reason`.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "UnpackedMultiheadAttention",
    "attention_owner",
    "attention_to_unpack",
    "prepare_replacement",
    "temporarily_unpacked",
    "unpack_attention",
    "unpack_reason",
]

_CACHE: weakref.WeakKeyDictionary[nn.MultiheadAttention, UnpackedMultiheadAttention] = (
    weakref.WeakKeyDictionary()
)


def unpack_reason(mha: nn.Module) -> str | None:
    """Why ``mha`` (an ``nn.MultiheadAttention``) cannot be unpacked, or ``None`` if it can."""
    if type(mha) is not nn.MultiheadAttention:
        return (
            f"inside {type(mha).__name__}, a subclass of nn.MultiheadAttention whose forward "
            "uses the weights without calling this module"
        )
    if mha.bias_k is not None or mha.add_zero_attn:
        return (
            "inside nn.MultiheadAttention with add_bias_kv/add_zero_attn, which balf does not "
            "unpack; its forward uses the weights without calling this module"
        )
    return None


def _additive(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A boolean mask (``True`` = not allowed) as an additive float mask; floats unchanged."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf")
        )
    return mask.to(dtype)


class UnpackedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` whose projections are ``nn.Linear`` children it calls.

    Args:
        embed_dim, num_heads, dropout, bias, kdim, vdim, batch_first: as
            ``nn.MultiheadAttention``.
        packed: one ``in_proj`` ``(E → 3E)`` (``kdim == vdim == embed_dim``), else
            ``q_proj`` ``(E → E)``, ``k_proj`` ``(kdim → E)``, ``v_proj`` ``(vdim → E)``.

    Shape:
        ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
        average_attn_weights=True, is_causal=False)`` takes and returns what
        ``nn.MultiheadAttention`` does: ``(L, B, E)`` inputs (``(B, L, E)`` if ``batch_first``,
        ``(L, E)`` unbatched) → ``(output, weights or None)``.

    ``in_proj_weight``/``in_proj_bias`` are ``None`` and ``_qkv_same_embed_dim`` is ``False``:
    ``nn.TransformerEncoderLayer`` reads them to decide on its fused kernel (which takes the
    packed tensors), and so takes its regular path, which calls this module.
    """

    in_proj_weight = None
    in_proj_bias = None
    _qkv_same_embed_dim = False

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        packed: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self.batch_first = batch_first
        self.packed = packed
        if packed:
            self.in_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias, **kw)
        else:
            self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
            self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias, **kw)
            self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias, **kw)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> UnpackedMultiheadAttention:
        """The unpacked equivalent of ``mha``, sharing its parameters and its ``out_proj``.

        Raises:
            ValueError: ``mha`` cannot be unpacked (see :func:`unpack_reason`).
        """
        reason = unpack_reason(mha)
        if reason is not None:
            raise ValueError(reason)
        packed = mha._qkv_same_embed_dim
        layer = cls(
            mha.embed_dim,
            mha.num_heads,
            mha.dropout,
            mha.in_proj_bias is not None,
            mha.kdim,
            mha.vdim,
            mha.batch_first,
            packed,
            device="meta",
        )
        e = mha.embed_dim
        bias = mha.in_proj_bias
        if packed:
            layer.in_proj.weight = mha.in_proj_weight
            layer.in_proj.bias = bias
        else:
            for i, (proj, weight) in enumerate(
                [
                    (layer.q_proj, mha.q_proj_weight),
                    (layer.k_proj, mha.k_proj_weight),
                    (layer.v_proj, mha.v_proj_weight),
                ]
            ):
                proj.weight = weight
                if bias is not None:  # a view of the packed bias, sharing its storage
                    proj.bias = nn.Parameter(bias.detach()[i * e : (i + 1) * e], bias.requires_grad)
        layer.out_proj = mha.out_proj
        layer.train(mha.training)
        return layer

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not self.packed:
            return self.q_proj(query), self.k_proj(key), self.v_proj(value)
        e = self.embed_dim
        if query is key and key is value:
            return self.in_proj(query).split(e, dim=-1)
        q = self.in_proj(query)[..., :e]
        if key is value:
            _, k, v = self.in_proj(key).split(e, dim=-1)
            return q, k, v
        return q, self.in_proj(key)[..., e : 2 * e], self.in_proj(value)[..., 2 * e :]

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        batched = query.dim() == 3
        if not batched:  # (L, E) → (1, L, E)
            query, key, value = (t.unsqueeze(0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:  # (L, B, E) → (B, L, E), keeping `key is value`
            same_kv, same_qk = key is value, query is key
            query = query.transpose(0, 1)
            key = query if same_qk else key.transpose(0, 1)
            value = key if same_kv else value.transpose(0, 1)
        q, k, v = self._project(query, key, value)
        b, l_q, _ = q.shape
        l_k = k.shape[1]
        h, d = self.num_heads, self.head_dim
        q = q.reshape(b, l_q, h, d).transpose(1, 2)  # (B, H, L, d)
        k = k.reshape(b, l_k, h, d).transpose(1, 2)
        v = v.reshape(b, l_k, h, d).transpose(1, 2)
        mask = _additive(attn_mask, q.dtype)
        if mask is not None:
            mask = mask.view(b, h, l_q, l_k) if mask.dim() == 3 else mask.view(1, 1, l_q, l_k)
        padding = _additive(key_padding_mask, q.dtype)
        causal = is_causal and padding is None and not need_weights
        if causal:
            mask = None
        if padding is not None:
            padding = padding.view(b, 1, 1, l_k)
            mask = padding if mask is None else mask + padding
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q * d**-0.5) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            weights = scores.softmax(dim=-1)
            attn = F.dropout(weights, dropout) if dropout > 0 else weights
            out = attn @ v
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if not batched:
                weights = weights.squeeze(0)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal
            )
        out = self.out_proj(out.transpose(1, 2).reshape(b, l_q, self.embed_dim))
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, packed={self.packed}, "
            f"batch_first={self.batch_first}"
        )


def _cached(mha: nn.MultiheadAttention) -> UnpackedMultiheadAttention:
    """The unpacked module of ``mha``, the same object on every call while it shares ``mha``'s
    current parameters (so hooks on its projections stay valid across swaps)."""
    layer = _CACHE.get(mha)
    if layer is not None and layer.out_proj is mha.out_proj:
        if layer.packed and layer.in_proj.weight is mha.in_proj_weight:
            layer.train(mha.training)
            return layer
        if not layer.packed and layer.q_proj.weight is mha.q_proj_weight:
            layer.train(mha.training)
            return layer
    layer = UnpackedMultiheadAttention.from_mha(mha)
    _CACHE[mha] = layer
    return layer


def _unpackable(model: nn.Module, names: Iterable[str] | None) -> dict[str, nn.Module]:
    wanted = None if names is None else set(names)
    return {
        name: m
        for name, m in model.named_modules()
        if name
        and isinstance(m, nn.MultiheadAttention)
        and unpack_reason(m) is None
        and (wanted is None or name in wanted)
    }


def unpack_attention(model: nn.Module, names: Iterable[str] | None = None) -> nn.Module:
    """Replace, in place, each ``nn.MultiheadAttention`` (those in ``names``, default all that
    can be) by an :class:`UnpackedMultiheadAttention` sharing its parameters.

    Returns:
        ``model``.
    """
    for name, mha in _unpackable(model, names).items():
        model.set_submodule(name, UnpackedMultiheadAttention.from_mha(mha))
    return model


@contextlib.contextmanager
def temporarily_unpacked(model: nn.Module) -> Iterator[dict[str, nn.Module]]:
    """Unpack every unpackable ``nn.MultiheadAttention`` of ``model`` for the ``with`` block.

    Yields:
        ``{name: original attention module}`` of the modules unpacked (restored on exit).
    """
    originals = _unpackable(model, None)
    try:
        for name, mha in originals.items():
            model.set_submodule(name, _cached(mha))
        yield originals
    finally:
        for name, mha in originals.items():
            model.set_submodule(name, mha)


def attention_to_unpack(model: nn.Module, layer_names: Iterable[str]) -> set[str]:
    """The ``nn.MultiheadAttention`` modules to unpack when the layers ``layer_names`` of
    ``model`` are replaced: those holding one of them, and the ``self_attn`` of every
    ``nn.TransformerEncoderLayer`` holding one (its fused fast path reads the dense weights of
    ``linear1``/``linear2`` and of the packed attention; an unpacked ``self_attn`` turns it off).
    """
    modules = dict(model.named_modules())
    attention = [n for n, m in modules.items() if n and isinstance(m, nn.MultiheadAttention)]
    out = set()
    for name in layer_names:
        owner = attention_owner(name, attention)
        if owner is not None:
            out.add(owner)
        parts = name.split(".")
        for i in range(len(parts)):
            prefix = ".".join(parts[:i])
            parent = modules.get(prefix)
            if isinstance(parent, nn.TransformerEncoderLayer):
                child = f"{prefix}.self_attn" if prefix else "self_attn"
                if child in attention:
                    out.add(child)
    return out


def prepare_replacement(model: nn.Module, layer_names: Iterable[str]) -> None:
    """Make ``model`` ready, in place, for the layers ``layer_names`` to be replaced by modules
    without a dense ``weight``: unpack the attention modules :func:`attention_to_unpack` names,
    and turn off the nested-tensor fast path of every ``nn.TransformerEncoder`` holding one of
    the layers (it reads ``linear1.weight`` of its first layer)."""
    layer_names = list(layer_names)
    unpack_attention(model, attention_to_unpack(model, layer_names))
    for prefix, module in model.named_modules():
        if isinstance(module, nn.TransformerEncoder) and any(
            name.startswith(prefix + ".") or not prefix for name in layer_names
        ):
            module.use_nested_tensor = False


def attention_owner(name: str, attention_names: Iterable[str]) -> str | None:
    """The name of the attention module among ``attention_names`` that contains layer ``name``."""
    for owner in attention_names:
        if name.startswith(owner + "."):
            return owner
    return None
