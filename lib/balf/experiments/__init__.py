"""Experiment machinery: the sweep runner, evaluation, run records, dataset plumbing, CLIs."""

from .evaluation import EvalResult, evaluate
from .sweep import SweepConfig, default_knobs, load_results, run_sweep

__all__ = ["EvalResult", "SweepConfig", "default_knobs", "evaluate", "load_results", "run_sweep"]
