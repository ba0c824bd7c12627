"""Padding tokens out of the statistics: the attention mask of the batch being calibrated on.

A right- or left-padded batch of token sequences (a tokenizer's ``BatchEncoding``, what
``DataCollatorWithPadding`` yields) holds padding positions whose hidden states are not real
data; counted in the Gram matrices they distort every layer's spectrum (78 real tokens among
768 rows cut a BERT's layers to a third of the ranks they need). When a calibration batch carries
an ``attention_mask`` ``(B, L)`` — the ``"attention_mask"`` entry of a mapping batch (also with
``forward=``), or the ``attention_mask`` keyword of an ``(args, kwargs)`` batch — the statistics
of every layer whose rows are token positions (:attr:`balf.LayerKind.token_rows`, e.g.
``nn.Linear``) and whose output is ``(B, L, K)`` keep only the rows where the mask is non-zero.
Other layers (convolutions, a pooled classifier head ``(B, K)``) see every row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from balf.calibration.batches import is_args_kwargs
from balf.layers.kind import kind_for

__all__ = ["PaddingMask", "attention_mask_of"]


def attention_mask_of(batch: Any) -> Tensor | None:
    """The ``(B, L)`` attention mask a batch carries, or ``None`` (none, not 2-D, or no padding).

    Read from a mapping's ``"attention_mask"`` entry or an ``(args, kwargs)`` pair's keyword.
    """
    mask = None
    if isinstance(batch, Mapping):
        mask = batch.get("attention_mask")
    elif is_args_kwargs(batch):
        mask = batch[1].get("attention_mask")
    if not isinstance(mask, Tensor) or mask.dim() != 2 or mask.is_floating_point():
        return None
    keep = mask != 0
    return None if bool(keep.all()) else keep


class PaddingMask:
    """The padding mask of the batch the model is running on, read by the statistics hooks.

    The calibration pass sets :attr:`current` (``(B, L)`` bool, ``True`` for real tokens, or
    ``None``) before it runs the model on a batch.
    """

    def __init__(self) -> None:
        self.current: Tensor | None = None

    def set(self, batch: Any) -> None:
        """Take the mask of ``batch`` (see :func:`attention_mask_of`)."""
        self.current = attention_mask_of(batch)

    def rows(self, module: nn.Module, output: Tensor) -> Tensor | None:
        """The ``(B, L)`` selection of ``module``'s real rows in this call, or ``None`` (all)."""
        mask = self.current
        if mask is None or output.shape[:-1] != mask.shape:
            return None
        kind = kind_for(module)
        if kind is None or not kind.token_rows:
            return None
        if mask.device != output.device:
            mask = mask.to(output.device)
        return mask if mask.dtype == torch.bool else mask.bool()
