"""Inference speed of original and BALF-compressed models (experiment 6).

For each model (default ``resnet50`` and ``vit_b_16``) one ``balf.Compressor`` produces the
``flops_auto`` models at every keep-ratio (default 0.9 … 0.3); the statistics and decompositions
are computed once. The latency of the original and of each compressed model is measured at every
batch size (default 1, 8, 32) on a random input batch: ``--warmup`` untimed calls, then
``--repeats`` timed calls (``torch.inference_mode()``, eval mode, ``torch.cuda.synchronize`` on
CUDA); the median is reported, with throughput = batch size / median latency (images/s).

``--synthetic`` uses random weights and seeded random calibration images (``--calib-size``,
``--image-size``); otherwise the pretrained weights and the ImageNet calibration folder
(``<data-root>/imagenet-calib``), with the sweeps' statistics cache (``--cache-root``) unless
``--no-cache``. ``--channels-last`` runs CNNs (models with a Conv2d) in channels-last layout.

Outputs in ``--out-dir`` (default ``results/benchmarks``), ``<device>`` being ``cpu``/``cuda``:

- ``speed_<device>.json``: ``{"benchmark", "command", "environment", "config", "rows": [...]}``,
  rewritten atomically after every model; one row per (model, variant, batch size) with
  ``model``, ``variant`` (``"original"`` or ``"flops_auto@<ratio>"``), ``keep_ratio`` (``None``
  for the original), ``flops``, ``params``, ``flops_ratio``, ``params_ratio`` (whole model,
  measured), ``flops_reduction`` (1 / flops_ratio), ``batch_size``, ``latency_s`` (median),
  ``latencies_s`` (every repeat), ``throughput`` (images/s), ``speedup`` (original latency /
  this latency at the same batch size), ``channels_last``, ``image_size``;
- ``speed_<device>.pdf`` / ``.png``: measured speedup vs FLOPs reduction, one panel per model,
  one line per batch size, and the ideal y = x. ``--plot-only`` re-renders them from the JSON.

Inference benchmarks fold BatchNorm into the preceding convolution in both the original and the
compressed models (``torch.nn.utils.fusion.fuse_conv_bn_eval``; ``--no-fold-bn`` to time them
unfolded, as the committed ``speed_cpu.json`` was).

Latency mode (``--mode latency_auto``, see :mod:`balf_paper.experiments.latency`): per model
and batch size the chosen layers' latencies are measured (``--rank-multiple``,
``--latency-points``, ``--min-run-time``, cached in ``--latency-cache``), the model is
compressed with a latency budget and with a FLOPs budget at every ``--ratios`` value, and every
variant is timed end to end; ``latency_<device>.{json,md,png,pdf}`` hold requested, predicted
and measured latency ratios. Model names ``fashion-mnist:resnet20``/``fashion-mnist:resnet56``
take the trained Fashion-MNIST checkpoints and calibration images and add the test accuracy
(``--eval-size`` for a subset), compared at matched measured latency in
``latency_accuracy_<device>.md``.

The work is done by :mod:`balf_paper.experiments.benchmarks.speed` (measurement),
:mod:`balf_paper.experiments.benchmarks.speed_plot` (plots, tables) and
:mod:`balf_paper.experiments.benchmarks.speed_cli` (options, ``main``).

Example:
    python scripts/imagenet/measure_speed.py --synthetic --calib-size 32 --batch-sizes 1 8
    python scripts/imagenet/measure_speed.py --mode latency_auto --synthetic --calib-size 64 \
        --models resnet50 --ratios 0.8 0.6 --batch-sizes 1 8 32
"""

from __future__ import annotations

from balf_paper.experiments.benchmarks.speed import measure_model
from balf_paper.experiments.benchmarks.speed_cli import build_parser, main, run_latency_mode
from balf_paper.experiments.benchmarks.speed_plot import plot_speedup
from balf_paper.experiments.cli.options import run_script

__all__ = ["build_parser", "main", "measure_model", "plot_speedup", "run_latency_mode"]

if __name__ == "__main__":
    run_script(main)
