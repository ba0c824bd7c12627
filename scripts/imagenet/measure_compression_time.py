"""Compression time and peak memory of BALF per phase, for every ImageNet model (experiment 5).

For each model, one ``balf.Compressor`` run (default ``flops_auto`` at 0.6, the paper's setting:
8192 calibration images, batch 64) is timed per phase from ``Report.timings``: ``statistics``
(the calibration forward pass with hooks), ``decomposition`` (per-layer eigendecompositions),
``allocation`` (rank selection), ``replacement`` (deep copy + installing the low-rank layers) and
``measurement`` (FLOP/parameter counting of the result). ``total`` is the wall time of building
the Compressor and running ``compress`` (so the phases sum to at most ``total``). In the same
process, a plain forward pass over the same calibration batches (eval, ``no_grad``, no hooks) is
timed afterwards (median of ``--forward-repeats`` passes); ``total_over_forward`` is their ratio.

Peak memory: on the CPU the peak resident set size (``VmHWM`` of ``/proc/self/status``, else
``getrusage``) minus a baseline taken with the model and the calibration data loaded (after one
warm-up batch). ``VmHWM`` is the peak over the process lifetime, so it is reset at the baseline
through ``/proc/self/clear_refs`` where the kernel allows it (``rss_peak_reset`` in the row);
otherwise the increase is relative to the earlier peak and may be underestimated. On CUDA,
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (``peak_cuda_gb``, and
``cuda_increase_gb`` over the baseline). Memory is in GiB (2^30 bytes).

Every model is measured in a fresh subprocess (a Python interpreter running this ``main`` with
``--single MODEL --row-out FILE``), so one model's memory peak cannot mix with another's and
each starts with cold caches. ``--in-process`` measures in the current process instead
(debugging only).

``--synthetic`` needs no ImageNet: random weights and seeded random calibration images of
``--image-size`` pixels. Real mode uses the pretrained weights and the ImageNet calibration
folder (``<data-root>/imagenet-calib``) with the model's evaluation preprocessing.

Output: ``--out`` (default ``results/benchmarks/compression_time.json``), rewritten atomically
after every model: ``{"benchmark", "command", "environment", "config", "rows": [...]}``, one row
per model (fields listed in :func:`measure_model`). ``--resume`` keeps rows measured with the
same settings and skips those models. A Markdown table is printed at the end.

The work is done by :mod:`balf_paper.experiments.benchmarks.compression_time` (measurement) and
:mod:`balf_paper.experiments.benchmarks.compression_time_cli` (options, subprocesses, ``main``).

Example:
    python scripts/imagenet/measure_compression_time.py --synthetic --models resnet18 resnet50
"""

from __future__ import annotations

from balf_paper.experiments.benchmarks.compression_time import measure_model, settings
from balf_paper.experiments.benchmarks.compression_time_cli import (
    build_parser,
    main,
    markdown_table,
)
from balf_paper.experiments.cli.options import run_script

__all__ = ["build_parser", "main", "markdown_table", "measure_model", "settings"]

if __name__ == "__main__":
    run_script(main)
