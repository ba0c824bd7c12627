"""Plain SVD vs activation-aware factorization of single layers (experiment 7).

For a Linear, a Conv2d and a grouped Conv2d layer, the normalised output error
``‖Y − Ŷ‖² / ‖Y‖²`` (``Y``: the dense layer's pre-bias outputs, ``Ŷ``: the rank-r layer's; the bias
is kept as is, so it cancels in ``Y − Ŷ``) is measured at every kept-rank ratio ``r / R``
(``r = ⌈ratio·R⌉``, the rule of ``balf.RankRatioConfig``), on the calibration inputs and on
held-out inputs, for plain SVD of the weights (``activation_aware=False``) and for BALF's
activation-aware factors. On the calibration data the activation-aware error is the
Eckart–Young minimum ``1 − e(r)`` (stored as ``bound``), so it is never above plain SVD's.

The library's own code path is used: ``balf.collect_statistics`` on the calibration inputs,
``balf.decompose_layer`` (with statistics, or ``None`` for plain SVD) and the factorized module
built by ``balf.factorize_layer`` — the one ``balf.compress`` installs. (``balf.compress``
itself is not called because it keeps a layer dense wherever the low-rank form is not strictly
cheaper, which would hide the upper half of every curve.)

Sources of layers:

- ``--source synthetic``: random layers (default PyTorch init) fed with correlated, anisotropic
  inputs: a decaying channel spectrum (``σ_i ∝ i^-decay`` under a random rotation); for the convs
  the maps are also spatially smoothed (3×3 mean) and rectified, as post-ReLU feature maps are.
  A Linear (``--linear-in`` → ``--linear-out``, ``--tokens`` vectors per sample), a 3×3 Conv2d
  (``--conv-channels``) and a 3×3 grouped Conv2d (``--grouped-channels``, ``--groups``).
- ``--source checkpoint``: layers of a trained model (default ResNet-20 on Fashion-MNIST) fed
  with their real input activations, captured by forward pre-hooks on real images
  (``balf_paper.experiments.tasks.image.data.experiment_data``: calibration = seeded training
  subset, held-out = test subset): the classifier ``fc`` (``--linear-layer``), a 3×3 conv
  (``--conv-layer``), and — CIFAR ResNets have no grouped conv — a grouped 3×3 conv with
  ``--groups`` groups whose filters are the block-diagonal part of the trained conv
  ``--grouped-layer`` (group g keeps the weights from input block g to output block g), fed with
  that conv's real input activations.

Outputs in ``--out-dir`` (default ``results/svd_vs_actaware``): ``svd_vs_actaware_<source>.json``
(``{"source", "command", "environment", "config", "layers": [{"panel", "name", "description",
"geometry": {"groups", "in_dim", "out_dim", "max_rank"}, "calibration_rows", "heldout_rows",
"points": [{"ratio", "rank", "rank_fraction", "bound", "svd": {"calibration", "heldout"},
"act_aware": {"calibration", "heldout"}}]}]}``) and ``.pdf``/``.png``, a figure with three panels
rendered from the JSON (``--plot-only`` re-renders it).

The work is done by :mod:`balf_paper.experiments.single_layer` (cases, curves, figure, ``main``).

Example:
    python scripts/compare_svd_vs_actaware.py --source synthetic
"""

from __future__ import annotations

from balf_paper.experiments.cli.options import run_script
from balf_paper.experiments.single_layer.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    run_script(main)
