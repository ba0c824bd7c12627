"""Latency budgets measured end to end (the latency mode of ``scripts/imagenet/measure_speed.py``).

For each model and batch size: the chosen layers' latency table is measured at that batch size
(:func:`balf.ranks.latency.measure_latency`), the model is compressed with a latency budget
(``latency_auto``) and, for comparison, with a FLOPs budget (``flops_auto``) at every requested
keep-ratio, and the original and every compressed model are timed end to end with BatchNorm
folded into the convolutions (:func:`balf.io.export.fold_batchnorm`, both sides alike). Each row
records the requested ratio, the ratio the latency table predicts and the measured one; for
models with an evaluation set (the trained Fashion-MNIST ResNets) also the accuracy, so the two
budgets can be compared at matched *measured* latency.

Rows (``latency_<device>.json``): ``model``, ``batch_size``, ``mode``, ``requested``,
``predicted_ratio``, ``measured_ratio`` (fastest compressed / fastest original call over
interleaved rounds), ``median_ratio`` (median of the per-round ratios), ``latency_s`` (fastest),
``median_latency_s``, ``latencies_s``, ``original_latency_s`` (fastest), ``table_model_s``,
``flops_ratio``, ``params_ratio``, ``factorized_layers``, ``ranks``, ``accuracy`` (or ``None``),
``rank_multiple``.

The experiment lives in four modules:
:mod:`~balf_paper.experiments.latency.measure`
(the subject, interleaved timing, predicted ratios), :mod:`~balf_paper.experiments.latency.sweep`
(:func:`run_latency_budgets`), :mod:`~balf_paper.experiments.latency.report` (Markdown tables) and
:mod:`~balf_paper.experiments.latency.plots` (the figure).
"""
