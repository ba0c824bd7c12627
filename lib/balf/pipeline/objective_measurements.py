"""What the allocation objectives measure on the model, as methods of
:class:`balf.pipeline.context.CompressionContext` (its base class): the sensitivity weights (probes
or their first-order estimate), the damage points, and the divergence of an allocation.

The objectives (:mod:`balf.ranks.objectives`) reach these through the context they are prepared
with; the measurements are computed once per setting and kept in the :class:`balf.Cache`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from balf._device import model_device
from balf._eval_mode import eval_mode
from balf.errors import BALFError
from balf.layers.attention import temporarily_unpacked
from balf.layers.factorize import factorize_layer
from balf.pipeline.sensitivity import (
    OutputProbe,
    load_or_measure_sensitivities,
    measure_sensitivities,
    probe_batches,
    runner,
)
from balf.pipeline.sensitivity_fisher import estimate_fisher_sensitivities, fisher_damage
from balf.ranks.costs import LayerCandidate
from balf.ranks.objectives import DamageObjective, SensitivityObjective

__all__ = ["ObjectiveMeasurements"]

#: How each :data:`balf.ranks.objectives.ESTIMATORS` entry obtains the sensitivity weights.
_SENSITIVITY_ESTIMATORS = {
    "probe": measure_sensitivities,
    "fisher": estimate_fisher_sensitivities,
}


class ObjectiveMeasurements:
    """The objectives' measurements of a :class:`~balf.pipeline.context.CompressionContext`
    (which provides ``model``, ``data``, ``cache``, ``statistics``, ``targets``, ``aliases``,
    ``decompositions()`` and ``timed()``)."""

    def __init__(self) -> None:
        self._sensitivities: dict[tuple, dict[str, Any]] = {}
        self._probes: dict[tuple, OutputProbe] = {}
        #: the last :class:`~balf.ranks.objectives.SelectedObjective` choice (reset per compress)
        self.objective_selection: dict[str, Any] | None = None


    def layer_sensitivities(
        self, candidates: list[LayerCandidate], objective: SensitivityObjective
    ) -> dict[str, float]:
        """Measured sensitivity weights of ``candidates`` (:mod:`balf.pipeline.sensitivity`),
        from the cache when it holds them, measured once per probe setting; the time is
        reported as ``timings["sensitivity"]``.

        Raises:
            BALFError: there is no calibration data (only statistics).
        """
        d = self.data
        memo = (objective.probe_keep, objective.probe_samples, objective.divergence,
                objective.estimator, tuple(c.name for c in candidates))  # fmt: skip
        estimate = _SENSITIVITY_ESTIMATORS[objective.estimator]

        def measure(data):
            return estimate(
                self.model, candidates, self.targets, self.aliases, self.decompositions(True),
                data, objective, forward=d.forward, batch_size=d.batch_size,
                max_batches=d.max_batches, progress=d.progress,
            )  # fmt: skip

        return self._measured_once(memo, "sensitivity", candidates, objective, measure)

    def layer_damage(
        self, candidates: list[LayerCandidate], objective: DamageObjective
    ) -> dict[str, list[tuple[float, float]]]:
        """Every candidate's estimated damage points ``[(lost energy, divergence), ...]`` at
        ``objective.probe_keeps`` (:func:`balf.pipeline.sensitivity_fisher.fisher_damage`),
        from the cache when it holds them; the time is reported as ``timings["sensitivity"]``.

        Raises:
            BALFError: there is no calibration data (only statistics).
        """
        d = self.data
        settings = ["damage", list(objective.probe_keeps), objective.probe_samples,
                    objective.divergence]  # fmt: skip
        memo = (*map(str, settings), tuple(c.name for c in candidates))

        def measure(data):
            return fisher_damage(
                self.model, candidates, self.targets, self.decompositions(True), data,
                objective.probe_keeps, samples=objective.probe_samples,
                divergence=objective.divergence, forward=d.forward, batch_size=d.batch_size,
                max_batches=d.max_batches,
            )  # fmt: skip

        damage = self._measured_once(memo, "damage", candidates, objective, measure, settings)
        return {n: [tuple(map(float, p)) for p in pts] for n, pts in damage.items()}

    def _measured_once(
        self,
        memo: tuple,
        what: str,
        candidates: list[LayerCandidate],
        objective: Any,
        measure: Callable[[Iterable | Tensor], dict[str, Any]],
        settings: list | None = None,
    ) -> dict[str, Any]:
        """What ``measure(data)`` measures of the layers, once per ``memo`` and from the cache
        when it holds it (keyed by ``settings``, default the sensitivity probe settings)."""
        d = self.data
        if d.data is None:
            raise BALFError(
                f"the {what} objective measures the model's output on calibration samples: "
                "pass calibration data (not only Statistics), or give what it measures"
            )
        if memo not in self._sensitivities:
            with self.timed("sensitivity"):
                measured, d.data = load_or_measure_sensitivities(
                    self.cache, self.model, candidates, self.statistics, d.data, objective,
                    measure, batch_size=d.batch_size, max_batches=d.max_batches,
                    forward=d.forward, settings=settings,
                )  # fmt: skip
            self._sensitivities[memo] = measured
        return self._sensitivities[memo]

    def truncation_divergence(
        self,
        candidates: list[LayerCandidate],
        ranks: list[int],
        samples: int | None,
        divergence: str = "auto",
    ) -> tuple[float, float]:
        """How far the model's outputs move from the dense model's on the first ``samples``
        calibration samples with every layer that ``ranks`` factorizes truncated (whole-model
        activation-aware factors; the model is put back afterwards): ``(disagreement,
        divergence)`` (:meth:`balf.pipeline.sensitivity.OutputProbe.scores`: the fraction of
        samples whose top class changes, for per-sample logits, else 0; and the mean
        divergence). The time is reported as ``timings["selection"]``.

        Raises:
            BALFError: there is no calibration data (only statistics).
        """
        d = self.data
        if d.data is None:
            raise BALFError(
                "scoring an allocation runs the model on calibration samples: pass calibration "
                "data (not only Statistics)"
            )
        if not isinstance(d.data, Tensor) and iter(d.data) is d.data:
            raise BALFError(
                "scoring an allocation reads the calibration data again: pass a re-iterable (a "
                "tensor, a list or a DataLoader), not a one-shot iterator"
            )
        with self.timed("selection"):
            key = (samples, divergence)
            if key not in self._probes:
                device = model_device(self.model)
                batches = probe_batches(
                    d.data, samples, device, batch_size=d.batch_size, max_batches=d.max_batches
                )
                with eval_mode(self.model), torch.no_grad():
                    self._probes[key] = OutputProbe(self.model, batches, runner(d.forward),
                                                    divergence)  # fmt: skip
            probe = self._probes[key]
            decompositions = self.decompositions(True)
            swapped = []
            with eval_mode(self.model), temporarily_unpacked(self.model), torch.no_grad():
                try:
                    for c, rank in zip(candidates, ranks, strict=True):
                        if c.cost.is_cheaper(rank):  # what the compression replaces
                            dense = self.targets[c.name]
                            small = factorize_layer(dense, decompositions[c.name], int(rank))
                            for alias in self.aliases[c.name]:
                                self.model.set_submodule(alias, small)
                            swapped.append((c.name, dense))
                    return probe.scores()
                finally:
                    for name, dense in swapped:
                        for alias in self.aliases[name]:
                            self.model.set_submodule(alias, dense)
