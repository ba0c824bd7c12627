"""The module paths of ``balf_paper.experiments`` before it was grouped into subfolders, kept
working for one release with a ``DeprecationWarning`` naming the new home.

``import balf_paper.experiments.plots`` gives :mod:`balf_paper.experiments.render.plots` (the
same module object). The finder is put on ``sys.meta_path`` by ``balf_paper.experiments``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__all__ = ["MOVED_MODULES", "install"]

_E = "balf_paper.experiments"

MOVED_MODULES: dict[str, str] = {
    f"{_E}.{old}": f"{_E}.{new}"
    for old, new in {
        "calib_shift": "cli.calib_shift",
        "calib_shift_report": "render.calib_shift",
        "compare": "render.compare",
        "datasets": "tasks.image.data",
        "evaluation": "tasks.image.evaluation",
        "labels": "render.labels",
        "language": "tasks.language",
        "language.cli": "cli.language",
        "language.hf_models": "tasks.language.models",
        "language.metrics": "tasks.language.metrics",
        "language.render": "render.language",
        "language.tasks": "tasks.language.task",
        "language.text_data": "tasks.language.text_data",
        "language.lm_eval_tasks": "tasks.language.lm_eval_tasks",
        "latency_budget": "latency",
        "latency_measure": "latency.measure",
        "latency_plots": "latency.plots",
        "latency_report": "latency.report",
        "latency_sweep": "latency.sweep",
        "layer_profile": "benchmarks.layer_profile",
        "loaders": "render.loaders",
        "main": "cli.main",
        "options": "cli.options",
        "plot_studies": "render.plot_studies",
        "plot_style": "render.plot_style",
        "plots": "render.plots",
        "points": "sweep.points",
        "readme": "render.readme",
        "render_studies": "render.studies",
        "run_lock": "sweep.lock",
        "save_dir_check": "sweep.save",
        "seeds": "sweep.seeds",
        "sweep_file": "sweep.store",
        "table_format": "render.table_format",
        "tables": "render.tables",
    }.items()
}
"""Old dotted module path → its new home (exact names only)."""


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec):
        module = importlib.import_module(self.new)
        self.original_spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self.original_spec  # the import system set the alias's spec on it

    def get_code(self, fullname):
        """The new module's code (``python -m <old path>`` runs it)."""
        return importlib.util.find_spec(self.new).loader.get_code(self.new)


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolves an old module path to the module at its new home, with a warning."""

    def find_spec(self, fullname, path=None, target=None):
        new = MOVED_MODULES.get(fullname)
        if new is None:
            return None
        warnings.warn(
            f"{fullname} moved to {new}; the old path is removed in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        is_package = importlib.util.find_spec(new).submodule_search_locations is not None
        return importlib.util.spec_from_loader(fullname, _Alias(new), is_package=is_package)


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())
