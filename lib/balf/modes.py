"""Named modes: a config class with some fields fixed, and how the mode is shown.

Every method config declares its modes once, beside its class, with :func:`register_modes`::

    @register_modes(
        Mode("energy", {"activation_aware": False}, ModeDisplay("Energy, plain SVD", "#7f7f7f")),
        Mode("energy_act_aware", {"activation_aware": True}, ModeDisplay(...)),
    )
    @dataclass(frozen=True)
    class EnergyConfig(CompressionConfig): ...

The registry (in registration order, which is also the display order of tables and legends)
serves the mode names of the command line, the sweep runner (``mode_spec(name).make(knob)``),
the tables' labels and the figures' colours and markers. A mode's knob is the first field of
its config class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar, get_args

from balf.errors import BALFError

__all__ = [
    "METRICS",
    "SIDES",
    "MethodConfig",
    "Metric",
    "Mode",
    "ModeDisplay",
    "Side",
    "mode_spec",
    "register_modes",
    "registered_modes",
]

Metric = Literal["flops", "params"]
"""What a budget counts: MACs per sample or weight entries."""
METRICS: tuple[str, ...] = get_args(Metric)

Side = Literal["input", "output"]
"""Which Gram matrix statistics accumulate: ``X_gᵀX_g`` (D×D) or ``Y_gᵀY_g`` (K×K)."""
SIDES: tuple[str, ...] = get_args(Side)


@dataclass(frozen=True)
class ModeDisplay:
    """How a mode is shown in tables and figures.

    Attributes:
        label: display name (table rows, legends).
        color: matplotlib colour, the same in every figure.
        marker: matplotlib marker.
        emphasised: drawn thicker and on top (BALF's own modes).
    """

    label: str
    color: str
    marker: str
    emphasised: bool = False


@dataclass(frozen=True)
class Mode:
    """A named mode: ``config_class(knob, **fixed)``.

    Attributes:
        name: the mode's name (results folder, ``--mode`` value).
        fixed: keyword arguments the mode fixes, e.g. ``{"activation_aware": False}``.
        display: label, colour and marker.
        sweep_values: key of the mode's default knobs in the sweep-values table
            (:func:`balf_paper.experiments.sweep.default_knobs`); ``None``: no defaults (sweeps must
            be given knobs).
        config_class: set by :func:`register_modes`.
    """

    name: str
    fixed: Mapping[str, Any]
    display: ModeDisplay
    sweep_values: str | None = "budget_and_uniform_ratios"
    config_class: type | None = field(default=None, compare=False)

    def make(self, knob: float, **kwargs: Any) -> MethodConfig:
        """The mode's config at ``knob`` (other fields from ``kwargs`` or their defaults)."""
        return self.config_class(knob, **self.fixed, **kwargs)

    def accepts(self, name: str) -> bool:
        """Whether the mode's config class has a field ``name``."""
        return name in {f.name for f in dataclasses.fields(self.config_class)}


_REGISTRY: dict[str, Mode] = {}

C = TypeVar("C", bound=type)


def register_modes(*modes: Mode) -> Callable[[C], C]:
    """Class decorator registering ``modes`` for a config dataclass (see module docstring)."""

    def register(cls: C) -> C:
        bound = tuple(dataclasses.replace(m, config_class=cls) for m in modes)
        for mode in bound:
            _REGISTRY[mode.name] = mode
        cls.modes = bound
        return cls

    return register


def mode_spec(name: str) -> Mode:
    """The registered :class:`Mode` called ``name`` (``BALFError`` when unknown)."""
    if name not in _REGISTRY:
        raise BALFError(f"unknown mode {name!r}; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def registered_modes() -> dict[str, Mode]:
    """Every registered mode by name, in registration (display) order.

    The compression modes are registered by ``import balf``; Model Folding's by
    :mod:`balf_paper.folding` (imported by :mod:`balf_paper.experiments`).
    """
    return dict(_REGISTRY)


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
