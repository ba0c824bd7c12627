"""What a compression did, layer by layer, as a JSON-serialisable report."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LayerReport", "Report"]


@dataclass
class LayerReport:
    """One layer's outcome.

    Attributes:
        kind: the layer kind's label (``"linear"``, ``"conv2d"``, ``"conv1d"``, …).
        rank: chosen rank (``max_rank`` when kept dense at full rank).
        max_rank: R = min(D, K).
        factorized: whether a low-rank layer was installed (only where strictly cheaper).
        energy_kept: fraction of the layer's calibration output energy kept (``1`` when left
            dense); ``None`` without statistics.
        weight_energy_kept: fraction of the weight spectrum's energy kept (plain-SVD modes).
        params_before, params_after: weight entries (bias excluded).
        macs_before, macs_after: multiply-adds per sample (bias excluded); ``None`` without
            statistics.
        route: decomposition route (``"input"``/``"output"``) of the factors.
        note: why a layer was left dense.
    """

    kind: str
    rank: int
    max_rank: int
    factorized: bool
    energy_kept: float | None = None
    weight_energy_kept: float | None = None
    params_before: int = 0
    params_after: int = 0
    macs_before: float | None = None
    macs_after: float | None = None
    route: str | None = None
    note: str | None = None


@dataclass
class Report:
    """Outcome of :func:`balf.compress`.

    Attributes:
        config: the config as a dict (``{"type": ..., ...}``).
        mode: mode name, e.g. ``"flops_auto"``.
        layers: per-layer outcome, by module name, for every chosen layer.
        skipped: candidate layers left dense, with the reason: they cannot be factorized
            (unsupported padding, no layer kind, …), the forward pass never calls them or
            uses only their weight, their weight is tied to another module, or ``exclude=``
            names them.
        metric: ``"flops"``/``"params"`` for the allocator, else ``None``.
        budget: allowed cost of the chosen layers (allocator modes), in MACs/sample or params.
        achieved: cost of the chosen layers after compression, same units.
        allocator: multiplier and iterations of the allocator (allocator modes).
        layer_params_ratio: params kept over the chosen layers.
        layer_flops_ratio: FLOPs kept over the chosen layers (``None`` without statistics).
        model_params_before/after: whole-model parameter counts.
        model_flops_before/after: whole-model FLOPs for one sample (``None`` without statistics).
        under_calibrated: layers that saw fewer calibration rows than their maximum rank,
            ``{name: {"rows", "rows_needed"}}`` (activation-aware modes; a warning names them).
        timings: seconds spent in this call per phase (statistics, decomposition, allocation,
            replacement, measurement; block by block: allocation_pass, allocation,
            propagation_pass).
        strategy: the calibration strategy when not whole-model (``BlockByBlock.to_dict()``
            with the resolved block names), else ``None``.
        objective: the allocation objective of a budgeted config (``Objective.to_dict()``),
            with ``"weights"``, the per-layer weights it measured or was given, where it has
            them; ``None`` for the other rules.
        latency_fit: the closed loop of :func:`balf.compress_to_latency`
            (requested, predicted and measured latency ratios per step), else ``None``.
    """

    config: dict[str, Any]
    mode: str
    layers: dict[str, LayerReport] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    metric: str | None = None
    budget: float | None = None
    achieved: float | None = None
    allocator: dict[str, float] | None = None
    layer_params_ratio: float = 1.0
    layer_flops_ratio: float | None = None
    model_params_before: int = 0
    model_params_after: int = 0
    model_flops_before: int | None = None
    model_flops_after: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    under_calibrated: dict[str, dict[str, int]] = field(default_factory=dict)
    strategy: dict[str, Any] | None = None
    objective: dict[str, Any] | None = None
    latency_fit: dict[str, Any] | None = None

    @property
    def model_params_ratio(self) -> float:
        """Whole-model parameters after / before."""
        return self.model_params_after / self.model_params_before

    @property
    def model_flops_ratio(self) -> float | None:
        """Whole-model FLOPs after / before (``None`` when not measured)."""
        if self.model_flops_before is None or self.model_flops_after is None:
            return None
        return self.model_flops_after / self.model_flops_before

    @property
    def ranks(self) -> dict[str, int]:
        """Chosen rank per layer."""
        return {name: lr.rank for name, lr in self.layers.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (includes the whole-model ratios)."""
        d = dataclasses.asdict(self)
        d["model_params_ratio"] = self.model_params_ratio
        d["model_flops_ratio"] = self.model_flops_ratio
        return d

    def summary(self) -> str:
        """One line: mode, knob, ratios, number of factorized layers."""
        n = sum(lr.factorized for lr in self.layers.values())
        flops = self.model_flops_ratio
        flops_s = f"{flops:.3f}" if flops is not None else "n/a"
        return (
            f"{self.mode}: {n}/{len(self.layers)} layers factorized, model params ratio "
            f"{self.model_params_ratio:.3f}, FLOPs ratio {flops_s}"
        )
