"""The paper's experiments, by concern.

- :mod:`.tasks`: what is compressed and how it is scored (image classification, language
  modelling, sentence similarity);
- :mod:`.sweep`: the one sweep runner, its point format, run folders, seeds and locks;
- :mod:`.render`: the one renderer (figures and tables from stored results only);
- :mod:`.cli`: ``python -m balf_paper.experiments EXPERIMENT`` and its options;
- :mod:`.latency`, :mod:`.benchmarks`, :mod:`.single_layer`: the studies outside the sweeps;
- :mod:`.modes` (how each mode is shown), :mod:`.layout` (the results tree),
  :mod:`.environment` (run records), :mod:`.training` (pretraining the small models).

Module paths from before this grouping still import, with a ``DeprecationWarning``
(:mod:`._moved`).
"""

from balf_paper.experiments import _moved
from balf_paper.experiments.sweep.runner import SweepConfig, default_knobs, run_sweep
from balf_paper.experiments.sweep.store import load_results
from balf_paper.experiments.tasks.image.evaluation import EvalResult, evaluate

_moved.install()

__all__ = ["EvalResult", "SweepConfig", "default_knobs", "evaluate", "load_results", "run_sweep"]
