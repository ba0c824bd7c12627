"""Allocation objectives: what the budgeted allocator maximises, one object per objective.

The allocator (:func:`balf.ranks.allocation.allocate`) maximises ``Σ_l v_l(r_l)`` under a budget;
an :class:`Objective` says what ``v_l(r)`` is, given the layer's kept-energy curve ``e_l(r)``
(``(R,)``, :attr:`balf.ranks.costs.LayerCandidate.energies`):

======================================  ======================  ==================================
objective                               ``v_l(r)``              measured first
======================================  ======================  ==================================
:class:`EnergyObjective`                ``e_l(r)``              nothing (the paper's, the default)
:class:`LogEnergyObjective`             ``log e_l(r)``          nothing (maximises ``Π_l e_l``)
:class:`SensitivityObjective`           ``w_l · e_l(r)``        ``w_l``: how much the model's output
                                                                moves per unit of lost energy of
                                                                layer ``l`` (one probe per layer)
:class:`LogSensitivityObjective`        ``w_l · log e_l(r)``    the same probes
:class:`FisherSensitivityObjective`     ``w_l · e_l(r)``        ``w_l`` estimated to second order
                                                                (one backward pass for all layers)
:class:`DamageObjective`                ``−D̂_l(1 − e_l(r))``    ``D_l`` at several truncations,
                                                                to second order (one pass)
:class:`SelectedObjective`              the best of several     each choice's allocation scored
                                                                on calibration samples
======================================  ======================  ==================================

The paper's objective treats every layer alike: a unit of output energy lost in the classifier
costs the same as one lost in the first convolution. :class:`SensitivityObjective` measures, for
each layer alone, the change of the model's output when that layer is truncated
(:mod:`balf.pipeline.sensitivity`), divided by the energy the truncation loses, and weights the
layer's curve by it; the same allocator and budgets then apply.

A new objective is one subclass registered with :func:`register_objective`;
``BALFConfig(ratio, objective=...)`` takes its name or an instance and round-trips through
:meth:`balf.BALFConfig.to_dict` (:meth:`Objective.to_dict` / :func:`objective_from_dict`).
"""

from __future__ import annotations

from balf.ranks.objectives.base import (
    EnergyObjective,
    LogEnergyObjective,
    Objective,
    objective_from_dict,
    objective_named,
    probe_rank,
    register_objective,
    registered_objectives,
)
from balf.ranks.objectives.damage import DamageObjective, damage_curve
from balf.ranks.objectives.selection import SelectedObjective
from balf.ranks.objectives.sensitivity import (
    DIVERGENCES,
    ESTIMATORS,
    FisherSensitivityObjective,
    LogSensitivityObjective,
    SensitivityObjective,
)

__all__ = [
    "DIVERGENCES",
    "ESTIMATORS",
    "DamageObjective",
    "EnergyObjective",
    "FisherSensitivityObjective",
    "LogEnergyObjective",
    "LogSensitivityObjective",
    "Objective",
    "SelectedObjective",
    "SensitivityObjective",
    "objective_from_dict",
    "objective_named",
    "damage_curve",
    "probe_rank",
    "register_objective",
    "registered_objectives",
]

for _cls in (
    EnergyObjective,
    LogEnergyObjective,
    SensitivityObjective,
    LogSensitivityObjective,
    FisherSensitivityObjective,
    DamageObjective,
    SelectedObjective,
):
    register_objective(_cls)
