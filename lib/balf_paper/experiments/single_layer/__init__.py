"""Plain SVD vs activation-aware factorization of single layers (experiment 7).

:mod:`.cases` builds the layers and their inputs, :mod:`.curves` measures the output errors,
:mod:`.plot` draws the figure from the stored JSON and :mod:`.cli` is the script's ``main``.
"""

from balf_paper.experiments.single_layer.cases import (
    CASE_SOURCES,
    LayerCase,
    block_diagonal_conv,
    capture_inputs,
    checkpoint_cases,
    synthetic_cases,
    synthetic_maps,
    synthetic_vectors,
)
from balf_paper.experiments.single_layer.curves import (
    curves_table,
    dense_outputs,
    layer_curves,
    output_error,
)
from balf_paper.experiments.single_layer.plot import plot_curves

__all__ = [
    "CASE_SOURCES",
    "LayerCase",
    "block_diagonal_conv",
    "capture_inputs",
    "checkpoint_cases",
    "curves_table",
    "dense_outputs",
    "layer_curves",
    "output_error",
    "plot_curves",
    "synthetic_cases",
    "synthetic_maps",
    "synthetic_vectors",
]
