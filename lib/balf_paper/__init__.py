"""balf_paper: the reproduction of the BALF paper's experiments, beside the method package balf.

Sweeps and their command-line entry point (:mod:`balf_paper.experiments`), datasets
(:mod:`balf_paper.data`), models (:mod:`balf_paper.models`), the Model Folding baseline
(:mod:`balf_paper.folding`), rendering of figures and tables, and benchmarks. It needs the
``[paper]`` extra (``pip install balf[paper]``: torchvision, timm, matplotlib, pandas, PyYAML);
the method package :mod:`balf` never imports it.
"""

from importlib.resources import files
from pathlib import Path

__all__ = ["package_file"]


def package_file(name: str) -> Path:
    """A file shipped with the package: ``configs/<x>.yaml`` or ``other_works.csv``."""
    return Path(str(files(__name__) / name))
