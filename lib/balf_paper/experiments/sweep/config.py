"""What defines a sweep (and must match for a rerun to resume it), and the paper's knob values."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from balf.errors import BALFError
from balf.ranks.modes import mode_spec
from balf_paper.experiments.modes import sweep_values_of
from balf_paper.experiments.tasks.base import task_kind
from balf_paper.models import THIRD_PARTY_CHECKPOINTS

__all__ = ["KNOB_TARGETS", "SWEEP_VALUES", "SweepConfig", "default_knobs"]

SWEEP_VALUES = "sweep_values.json"
"""The paper's sweep values, shipped as package data of :mod:`balf_paper.experiments`."""

KNOB_TARGETS = (None, "params_ratio")
"""What a knob means: ``None``, the mode's own value; ``"params_ratio"``, the kept parameter
ratio of the compressed layers (a mode whose knob is no ratio, e.g. an energy threshold, is
solved for it: :mod:`balf_paper.experiments.sweep.methods`)."""


@dataclass
class SweepConfig:
    """Everything that defines a sweep (and must match for a rerun to resume it).

    Attributes:
        dataset, model, mode: what is compressed and how (a registered mode,
            :func:`balf.ranks.modes.registered_modes`).
        knobs: the mode's values (keep-ratios, energy thresholds, or Model Folding's ``keep``).
        calib_size: calibration samples; seed: their draw (and of evaluation subsets).
        n_iters: allocator iterations (modes whose config has ``n_iters``).
        eval_size: evaluation subset size (``None``: full set).
        weights: identity of the model's weights (checkpoint path and hash, random seed,
            provenance).
        evaluation: settings of the evaluation and data (corruptions, token windows, ...).
        extra: free-form settings recorded with the results (not part of the identity).
        eval_seed: seed of the evaluation subset when it differs from ``seed`` (``--seeds``);
            ``None``: ``seed``.
        calibration_shift: the corruption applied to the calibration images (``calib-shift``
            experiment: corruption, severity, cache manifest digest); empty: clean images.
        task: the registered task kind (:mod:`balf_paper.experiments.tasks.base`).
        strategy: the calibration strategy (``"whole"``, ``"block"``, or registered with
            :func:`balf_paper.experiments.sweep.methods.register_strategy`);
            strategy_options: its keyword arguments.
        method_options: further fields of the mode's config, passed through to it (e.g.
            ``{"rank_multiple": 8}``, or the options of a newly registered mode).
        knob_target: what a knob means (:data:`KNOB_TARGETS`).
        objective_options: fields of the mode's allocation objective, set where the objective
            has them (e.g. ``{"probe_samples": 2}`` for the sensitivity-weighted objective).
    """

    dataset: str
    model: str
    mode: str
    knobs: list[float]
    calib_size: int
    seed: int = 0
    n_iters: int = 300
    eval_size: int | None = None
    weights: str = ""
    evaluation: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    eval_seed: int | None = None
    calibration_shift: dict[str, Any] = field(default_factory=dict)
    task: str = "image-classification"
    strategy: str = "whole"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, Any] = field(default_factory=dict)
    knob_target: str | None = None
    objective_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = mode_spec(self.mode)  # BALFError naming the known modes
        task_kind(self.task)
        if not self.knobs:
            raise BALFError("a sweep needs at least one knob value")
        if self.knob_target not in KNOB_TARGETS:
            raise BALFError(f"knob_target must be one of {KNOB_TARGETS}, not {self.knob_target!r}")
        names = [f.name for f in dataclasses.fields(spec.config_class)]
        reserved = {names[0], "n_iters", *spec.fixed}  # set by the sweep
        bad = sorted(k for k in self.method_options if k in reserved or k not in names)
        if bad:
            free = [n for n in names if n not in reserved]
            raise BALFError(
                f"method option(s) {bad} not accepted by mode {self.mode!r}; its options: "
                f"{free or 'none'} (the knob, the mode's fixed fields and n_iters are set by "
                "the sweep)"
            )

    def identity(self) -> dict[str, Any]:
        """The fields that must match for results to be resumed (all but the knob list)."""
        d = asdict(self)
        d.pop("knobs")
        d.pop("extra")
        return d

    def method_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the mode's config besides the knob."""
        spec = mode_spec(self.mode)
        options = {"n_iters": self.n_iters} if spec.accepts("n_iters") else {}
        return {**options, **self.method_options}


def default_knobs(mode: str, model: str, path: str | Path | None = None) -> list[float]:
    """The paper's sweep values for ``mode`` and ``model``.

    The mode's sweep-values key (:func:`balf_paper.experiments.modes.sweep_values_of`) names
    its entry in the table (``path``, or by default the package's :data:`SWEEP_VALUES`): a list,
    or a table of lists by model name. A third-party option-A ResNet (``resnet20a``) takes the
    values of the same-depth paper model.
    """
    mode_spec(mode)  # BALFError naming the known modes
    key = sweep_values_of(mode)
    if key is None:
        raise BALFError(f"mode {mode!r} has no default knobs; pass knobs explicitly")
    if path is None:
        text = resources.files("balf_paper.experiments").joinpath(SWEEP_VALUES).read_text()
    else:
        text = Path(path).read_text()
    values = json.loads(text)[key]
    if isinstance(values, dict):
        if model in THIRD_PARTY_CHECKPOINTS and model not in values and model[:-1] in values:
            model = model[:-1]
        if model not in values:
            raise BALFError(f"no default {mode} knobs for {model!r}; pass knobs explicitly")
        values = values[model]
    return list(values)
