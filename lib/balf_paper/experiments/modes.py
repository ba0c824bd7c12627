"""How the paper shows each mode (label, colour, marker) and which sweep values it takes.

The method package declares modes (:func:`balf.register_modes`); their display is the paper's
choice, declared here for the built-in modes and Model Folding's, and by
:func:`register_display` for new ones. The order of :data:`DISPLAY_ORDER` is the order of table
rows and legends; modes without a display come after, in registration order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from balf.ranks.modes import _UNSET, registered_modes

__all__ = ["ModeDisplay", "display_of", "mode_order", "register_display", "sweep_values_of"]


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


_RATIOS = "budget_and_uniform_ratios"
_DISPLAYS: dict[str, ModeDisplay] = {}
_SWEEP_VALUES: dict[str, str | None] = {}


def register_display(
    mode: str, display: ModeDisplay, sweep_values: str | None = _RATIOS
) -> ModeDisplay:
    """Show ``mode`` with ``display``; ``sweep_values`` names its default knobs in the
    sweep-values table (``None``: sweeps must be given ``--knobs``)."""
    _DISPLAYS[mode] = display
    _SWEEP_VALUES[mode] = sweep_values
    return display


for _mode, _display, _values in (
    ("flops_auto", ModeDisplay("BALF (FLOPs budget)", "#d62728", "o", True), _RATIOS),
    ("params_auto", ModeDisplay("BALF (params budget)", "#1f77b4", "s", True), _RATIOS),
    ("latency_auto", ModeDisplay("BALF (latency budget)", "#9467bd", "D", True), _RATIOS),
    (
        "flops_auto_sensitivity",
        ModeDisplay("BALF, sensitivity-weighted (FLOPs)", "#e6194b", "*", True),
        _RATIOS,
    ),
    (
        "params_auto_sensitivity",
        ModeDisplay("BALF, sensitivity-weighted (params)", "#4363d8", "P", True),
        _RATIOS,
    ),
    ("flops_auto_log_energy", ModeDisplay("BALF, log-energy (FLOPs)", "#f58231", "o"), _RATIOS),
    (
        "flops_auto_log_sensitivity",
        ModeDisplay("BALF, sensitivity-weighted log-energy (FLOPs)", "#3cb44b", "X", True),
        _RATIOS,
    ),
    (
        "params_auto_log_sensitivity",
        ModeDisplay("BALF, sensitivity-weighted log-energy (params)", "#808000", "x", True),
        _RATIOS,
    ),
    ("params_auto_log_energy", ModeDisplay("BALF, log-energy (params)", "#42d4f4", "s"), _RATIOS),
    (
        "flops_auto_fisher",
        ModeDisplay("BALF, Fisher-weighted (FLOPs)", "#911eb4", "*", True),
        _RATIOS,
    ),
    (
        "params_auto_fisher",
        ModeDisplay("BALF, Fisher-weighted (params)", "#f032e6", "P", True),
        _RATIOS,
    ),
    (
        "flops_auto_damage",
        ModeDisplay("BALF, damage curves (FLOPs)", "#000075", "*", True),
        _RATIOS,
    ),
    (
        "params_auto_damage",
        ModeDisplay("BALF, damage curves (params)", "#9a6324", "P", True),
        _RATIOS,
    ),
    (
        "flops_auto_selected",
        ModeDisplay("BALF, selected objective (FLOPs)", "#469990", "*", True),
        _RATIOS,
    ),
    (
        "params_auto_selected",
        ModeDisplay("BALF, selected objective (params)", "#aaffc3", "P", True),
        _RATIOS,
    ),
    ("energy", ModeDisplay("Energy, plain SVD", "#7f7f7f", "v"), "energy_thresholds"),
    (
        "energy_act_aware",
        ModeDisplay("Energy, act.-aware", "#2ca02c", "^"),
        "energy_act_aware_thresholds",
    ),
    ("uniform", ModeDisplay("Uniform, plain SVD", "#bcbd22", "<"), _RATIOS),
    ("uniform_act_aware", ModeDisplay("Uniform, act.-aware", "#9467bd", ">"), _RATIOS),
    ("rank_ratio", ModeDisplay("Rank ratio, plain SVD", "#e377c2", "p"), _RATIOS),
    ("rank_ratio_act_aware", ModeDisplay("Rank ratio, act.-aware", "#17becf", "h"), _RATIOS),
    ("folding_ar", ModeDisplay("Model Folding (AR, data-free)", "#8c564b", "D"), "folding_keep"),
    (
        "folding_r",
        ModeDisplay("Model Folding (R, BN re-estimated)", "#ff7f0e", "d"),
        "folding_keep",
    ),
    ("folding_none", ModeDisplay("Model Folding (no repair)", "#c49c94", "X"), "folding_keep"),
):
    register_display(_mode, _display, _values)


#: Run folders of modes run with the layer-sequential refit (``--refit-beta``): shown as such.
for _mode, _display in (
    ("flops_auto+refit", ModeDisplay("BALF + refit (FLOPs)", "#800000", "o", True)),
    ("params_auto+refit", ModeDisplay("BALF + refit (params)", "#000075", "s", True)),
    (
        "flops_auto_sensitivity+refit",
        ModeDisplay("BALF, sensitivity-weighted + refit (FLOPs)", "#911eb4", "*", True),
    ),
    (
        "params_auto_sensitivity+refit",
        ModeDisplay("BALF, sensitivity-weighted + refit (params)", "#469990", "P", True),
    ),
):
    register_display(_mode, _display)


def display_of(mode: str) -> ModeDisplay | None:
    """The display of ``mode`` (or the one a balf 0.1 ``Mode`` declared), ``None`` if none; a
    ``<mode>+refit`` run folder without its own display shows as its mode's, "+ refit" added
    before the budget in parentheses."""
    if mode in _DISPLAYS:
        return _DISPLAYS[mode]
    base, refit, _ = mode.partition("+refit")
    if refit and base in _DISPLAYS:
        shown = _DISPLAYS[base]
        head, paren, tail = shown.label.rpartition(" (")
        label = f"{head} + refit ({tail}" if paren else f"{shown.label} + refit"
        return dataclasses.replace(shown, label=label)
    spec = registered_modes().get(mode)
    return spec.display if spec is not None else None


def sweep_values_of(mode: str) -> str | None:
    """The key of ``mode``'s default knobs in the sweep-values table (``None``: none)."""
    if mode in _SWEEP_VALUES:
        return _SWEEP_VALUES[mode]
    spec = registered_modes().get(mode)
    if spec is not None and spec.sweep_values is not _UNSET:
        return spec.sweep_values
    return _RATIOS


def mode_order() -> list[str]:
    """Every registered mode in display order: the paper's modes first, then the others."""
    registered = registered_modes()
    return [m for m in _DISPLAYS if m in registered] + [m for m in registered if m not in _DISPLAYS]
