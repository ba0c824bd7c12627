"""Putting a factorized layer into a model in place of the dense one.

The replacement is built from the layer's decomposition at the selected rank
(:func:`balf.layers.factorize.factorize_layer`), checked to produce the dense layer's output
shape, given the dense layer's hooks, and installed under every name the dense layer is
registered as (a shared module stays shared).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from balf.decomposition import LayerDecomposition
from balf.io.hf_hook import mark_if_transformers
from balf.layers.factorize import factorize_layer
from balf.layers.hooks import transfer_hooks
from balf.pipeline.shape_check import check_output_shape

__all__ = ["install_factorized"]


def install_factorized(
    model: nn.Module,
    name: str,
    dense: nn.Module,
    decomposition: LayerDecomposition,
    rank: int,
    aliases: Iterable[str],
    shapes: tuple | None = None,
) -> nn.Module:
    """Replace ``dense`` (``model``'s layer ``name``, also registered as ``aliases``) by its
    rank-``rank`` factorization.

    Args:
        shapes: the dense layer's input and output shapes on a calibration sample
            (:func:`balf.pipeline.shape_check.layer_shapes`); the replacement must match them.

    Returns:
        ``model``, or the replacement itself when the model is that layer (``name == ""``).
    """
    small = factorize_layer(dense, decomposition, rank)
    if shapes is not None:
        check_output_shape(name, dense, small, shapes)
    transfer_hooks(dense, small)  # the user's hooks stay on the layer
    if name == "":
        return small
    for alias in aliases:
        model.set_submodule(alias, small)
    mark_if_transformers(model)  # its save_pretrained records the factorization
    return model
