"""Experiment machinery: the sweep runner, evaluation, run records, dataset plumbing, CLIs."""

from balf_paper.experiments.evaluation import EvalResult, evaluate
from balf_paper.experiments.sweep import SweepConfig, default_knobs, load_results, run_sweep

__all__ = ["EvalResult", "SweepConfig", "default_knobs", "evaluate", "load_results", "run_sweep"]
