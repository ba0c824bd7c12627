"""balf's place in transformers' quantizer registry, without importing transformers.

``import balf; AutoModelForCausalLM.from_pretrained(folder)`` must rebuild a compressed model, so
``"balf"`` has to be in transformers' quantizer registry by the time ``from_pretrained`` reads
the folder's config. Importing transformers in ``import balf`` would make every ``import balf``
about a second slower and fail where transformers is not installed, so :func:`install` (run by
``import balf``) does one of two things:

* transformers' registry (``transformers.quantizers.auto``) is already imported: register now
  (imports :mod:`balf.io.hf_quantizer`, a few milliseconds);
* otherwise: put a finder on ``sys.meta_path`` that waits for that module. When anything imports
  it (transformers' ``modeling_utils`` does, so every model class and ``from_pretrained`` does),
  the finder lets the normal loader run it, then registers; the finder then removes itself.
  Until then it costs one string comparison per import.

:func:`mark_if_transformers` is what :func:`balf.compress` and :func:`balf.load` call on their
result (the latter through :func:`balf.io.serialization.add_load_hook`): it marks a transformers
model for ``save_pretrained`` (again without importing transformers: a transformers model exists
only once transformers is imported).
"""

from __future__ import annotations

import importlib
import importlib.abc
import logging
import sys

from torch import nn

from balf.io.serialization import add_load_hook

__all__ = ["REGISTRY_MODULE", "install", "mark_if_transformers"]

log = logging.getLogger(__name__)

REGISTRY_MODULE = "transformers.quantizers.auto"
"""transformers' registry of quantization methods; balf registers once it is imported."""
_QUANTIZER_MODULE = "balf.io.hf_quantizer"


def _register() -> None:
    try:
        importlib.import_module(_QUANTIZER_MODULE)  # registers on import
    except Exception as exc:  # an unexpected transformers version must not break its import
        log.warning(
            "balf could not register with transformers (%s: %s): model.save_pretrained and "
            "from_pretrained will not handle compressed models; use balf.save(model, path) and "
            "balf.load(path, model)", type(exc).__name__, exc
        )  # fmt: skip


class _RegisterAfterLoad(importlib.abc.Loader):
    """Runs the real loader of transformers' registry module, then registers balf."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self._loader  # as if never wrapped
        _remove_finder()
        _register()

    def __getattr__(self, name: str):  # get_code, get_source, is_package, resource readers, …
        return getattr(self._loader, name)


class _RegistryFinder(importlib.abc.MetaPathFinder):
    """Finds transformers' registry module with the other finders and wraps its loader."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != REGISTRY_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisterAfterLoad(spec.loader)
                return spec
        return None


def _remove_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _RegistryFinder)]


def install() -> None:
    """Register with transformers now if its registry is loaded, else when it loads (once);
    mark the transformers models :func:`balf.load` returns (:func:`mark_if_transformers`)."""
    add_load_hook(mark_if_transformers)
    if REGISTRY_MODULE in sys.modules:
        _register()
    elif not any(isinstance(f, _RegistryFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegistryFinder())


def mark_if_transformers(model: nn.Module) -> None:
    """If ``model`` is a transformers model, let its ``save_pretrained`` record the factorization
    (:func:`balf.io.hf_quantizer.mark_compressed`); otherwise do nothing."""
    modeling = sys.modules.get("transformers.modeling_utils")
    base = getattr(modeling, "PreTrainedModel", None)
    if base is None or not isinstance(model, base):
        return
    from balf.io.hf_quantizer import mark_compressed

    mark_compressed(model)
