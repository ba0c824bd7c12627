"""Named modes: a config class with some fields fixed, e.g. ``flops_auto`` = ``BALFConfig`` with
``metric="flops"``.

Every rank-rule config declares its modes once, beside its class, with :func:`register_modes`::

    @register_modes(
        Mode("energy", {"activation_aware": False}),
        Mode("energy_act_aware", {"activation_aware": True}),
    )
    @dataclass(frozen=True)
    class EnergyConfig(CompressionConfig): ...

The registry (in registration order) serves mode names (:func:`balf.config_for_mode`) and
:func:`balf.config_from_dict`, which knows every registered config class. How a mode is shown in
tables and figures is the paper package's business (``balf_paper.experiments.modes``). A mode's
knob is the first field of its config class.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from balf.errors import BALFError

__all__ = [
    "MethodConfig",
    "Mode",
    "config_class_named",
    "mode_spec",
    "register_modes",
    "registered_modes",
]

_UNSET: Any = object()


@dataclass(frozen=True)
class Mode:
    """A named mode: ``config_class(knob, **fixed)``.

    Attributes:
        name: the mode's name (results folder, ``--mode`` value).
        fixed: keyword arguments the mode fixes, e.g. ``{"activation_aware": False}``.
        config_class: set by :func:`register_modes`.
        display, sweep_values: deprecated (balf <= 0.1 declared the paper's plot style here);
            read by ``balf_paper.experiments.modes`` when the mode has no display there.
    """

    name: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    display: Any = None
    sweep_values: Any = _UNSET
    config_class: type | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.display is not None or self.sweep_values is not _UNSET:
            warnings.warn(
                "Mode(name, fixed, display, sweep_values) is deprecated: declare Mode(name, fixed) "
                "and register the display with balf_paper.experiments.modes.register_display",
                DeprecationWarning,
                stacklevel=3,
            )

    def make(self, knob: float, **kwargs: Any) -> MethodConfig:
        """The mode's config at ``knob`` (other fields from ``kwargs`` or their defaults)."""
        return self.config_class(knob, **self.fixed, **kwargs)

    def accepts(self, name: str) -> bool:
        """Whether the mode's config class has a field ``name``."""
        return name in {f.name for f in dataclasses.fields(self.config_class)}


_REGISTRY: dict[str, Mode] = {}
_CLASSES: dict[str, type] = {}

C = TypeVar("C", bound=type)


def register_modes(*modes: Mode) -> Callable[[C], C]:
    """Class decorator registering a config dataclass and its ``modes`` (module docstring)."""

    def register(cls: C) -> C:
        bound = tuple(dataclasses.replace(m, config_class=cls) for m in modes)
        for mode in bound:
            _REGISTRY[mode.name] = mode
        _CLASSES[cls.__name__] = cls
        cls.modes = bound
        return cls

    return register


def mode_spec(name: str) -> Mode:
    """The registered :class:`Mode` called ``name`` (``BALFError`` when unknown)."""
    if name not in _REGISTRY:
        raise BALFError(f"unknown mode {name!r}; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def registered_modes() -> dict[str, Mode]:
    """Every registered mode by name, in registration order.

    The compression modes are registered by ``import balf``; Model Folding's by
    ``balf_paper.folding``.
    """
    return dict(_REGISTRY)


def config_class_named(name: str) -> type | None:
    """The registered config class called ``name`` (a ``to_dict()``'s ``"type"``), or ``None``."""
    return _CLASSES.get(name)


class MethodConfig:
    """Base of method configs (frozen dataclasses): mode and knob derived from the registry.

    Attributes:
        modes: the class's registered modes (set by :func:`register_modes`).
    """

    modes: ClassVar[tuple[Mode, ...]] = ()

    @property
    def mode(self) -> str:
        """The registered mode whose fixed fields this config matches."""
        for mode in type(self).modes:
            if all(getattr(self, k) == v for k, v in mode.fixed.items()):
                return mode.name
        raise BALFError(f"{self!r} matches none of its class's modes")

    @property
    def knob(self) -> float:
        """The mode's sweep value: the config's first field (ratio, threshold, keep)."""
        return getattr(self, dataclasses.fields(self)[0].name)

    def to_dict(self) -> dict[str, Any]:
        """``{"type": class name, **fields}``, JSON-serialisable."""
        return {"type": type(self).__name__, **dataclasses.asdict(self)}
