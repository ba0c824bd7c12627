"""The module paths and names of balf 0.1, kept working for one release with a warning.

balf 0.2 grouped the core by concept (``balf.layers``, ``balf.calibration``, ``balf.ranks``,
``balf.io``) and moved the paper's reproduction to the package ``balf_paper``. Importing an old
module path (``balf.statistics``, ``balf.experiments.sweep``, …) still works: it gives the module
at its new home and a ``DeprecationWarning`` naming it. Nothing here is imported eagerly.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__all__ = ["MOVED_MODULES", "install"]

MOVED_MODULES: dict[str, str] = {
    "balf._io": "balf.io.atomic",
    "balf._mode": "balf._eval_mode",
    "balf.adapters": "balf.layers",
    "balf.adapters._conv": "balf.layers._conv",
    "balf.adapters._grams": "balf.layers._grams",
    "balf.adapters.base": "balf.layers.kind",
    "balf.adapters.conv1d": "balf.layers.conv1d",
    "balf.adapters.conv2d": "balf.layers.conv2d",
    "balf.adapters.linear": "balf.layers.linear",
    "balf.allocation": "balf.ranks.allocation",
    "balf.api": "balf.pipeline.compressor",
    "balf.batches": "balf.calibration.batches",
    "balf.cache": "balf.io.cache",
    "balf.calibration.block_by_block": "balf.pipeline.block_by_block",
    "balf.calibration.block_runner": "balf.pipeline.block_runner",
    "balf.calibration.input_checks": "balf.pipeline.input_checks",
    "balf.compressor": "balf.pipeline.compressor",
    "balf.config": "balf.ranks.configs",
    "balf.costs": "balf.ranks.costs",
    "balf.counting.baseline": "balf.pipeline.baseline",
    "balf.data": "balf_paper.data",
    "balf.distributed": "balf.calibration.distributed",
    "balf.example_input": "balf.calibration.example_input",
    "balf.experiments": "balf_paper.experiments",
    "balf.export": "balf.io.export",
    "balf.factorize": "balf.layers.factorize",
    "balf.flops": "balf.counting.flops",
    "balf.fingerprints": "balf.io.fingerprints",
    "balf.folding": "balf_paper.folding",
    "balf.geometry": "balf.layers.geometry",
    "balf.hashing": "balf.io.hashing",
    "balf.latency": "balf.ranks.latency",
    "balf.latency_table": "balf.ranks.latency.table",
    "balf.layer_kinds": "balf.layers.kind",
    "balf.layer_statistics": "balf.calibration.statistics",
    "balf.layers.install": "balf.pipeline.install",
    "balf.layers.shape_check": "balf.pipeline.shape_check",
    "balf.models": "balf_paper.models",
    "balf.modes": "balf.ranks.modes",
    "balf.rank_rules": "balf.ranks.rules",
    "balf.report_building": "balf.report.build",
    "balf.representation": "balf.layers.dispatch",
    "balf.sensitivity": "balf.pipeline.sensitivity",
    "balf.sequential": "balf.pipeline.sequential",
    "balf.serialization": "balf.io.serialization",
    "balf.statistics": "balf.calibration.collect",
    "balf.targets": "balf.layers.selection",
}
"""Old dotted module path → its new home."""


def _new_name(old: str) -> str | None:
    for prefix, new in MOVED_MODULES.items():
        if old == prefix or old.startswith(prefix + "."):
            return new + old[len(prefix) :]
    return None


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

    def is_package(self, fullname) -> bool:
        return importlib.util.find_spec(self.new).submodule_search_locations is not None


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolves an old module path to the module at its new home, with a warning."""

    def find_spec(self, fullname, path=None, target=None):
        new = _new_name(fullname)
        if new is None:
            return None
        warnings.warn(
            f"{fullname} moved to {new} (balf 0.2); the old path is removed in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        loader = _Alias(new)
        return importlib.util.spec_from_loader(fullname, loader, is_package=loader.is_package(new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())  # before the path finder: one module object
