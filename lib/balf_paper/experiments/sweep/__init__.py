"""The one sweep runner: compress at every knob of a mode, evaluate, store one point per knob.

:mod:`.runner` runs sweeps; :mod:`.points` is the point format; :mod:`.store` the
``results.json`` of a run folder (resume); :mod:`.seeds` several calibration seeds;
:mod:`.lock` one process per run folder; :mod:`.save` ``--save-model``.
"""

from balf_paper.experiments.sweep.runner import SweepConfig, default_knobs, run_sweep
from balf_paper.experiments.sweep.store import load_results

__all__ = ["SweepConfig", "default_knobs", "load_results", "run_sweep"]
