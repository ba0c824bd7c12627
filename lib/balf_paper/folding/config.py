"""Model Folding as a method config, with its modes, like the compression configs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from balf.errors import BALFError
from balf.ranks.modes import MethodConfig, Mode, register_modes
from balf_paper.folding.fold import REPAIRS, fold_model

__all__ = ["FOLDING_MODES", "FoldingConfig"]


@register_modes(
    Mode("folding_ar", {"repair": "ar"}),
    Mode("folding_r", {"repair": "r"}),
    Mode("folding_none", {"repair": "none"}),
)
@dataclass(frozen=True)
class FoldingConfig(MethodConfig):
    """Model Folding at ``keep`` with a variance ``repair`` (see :func:`fold_model`).

    Args:
        keep: fraction of channels kept per channel group, in ``(0, 1]``.
        repair: ``"ar"`` (data-free), ``"r"`` (BN statistics from data) or ``"none"``.
    """

    keep: float
    repair: str = "ar"

    def __post_init__(self) -> None:
        if isinstance(self.keep, bool) or not isinstance(self.keep, (int, float)):
            raise BALFError(f"keep must be a number in (0, 1], got {self.keep!r}")
        if self.repair not in REPAIRS:
            raise BALFError(f"repair must be one of {REPAIRS}, got {self.repair!r}")

    @property
    def needs_data(self) -> bool:
        """Whether the repair reads training images (``"r"``)."""
        return self.repair == "r"

    def apply(self, model: nn.Module, data: Iterable | None = None, seed: int = 0) -> nn.Module:
        """The folded copy of ``model`` (``data`` is read only when :attr:`needs_data`)."""
        return fold_model(
            model, self.keep, self.repair, data=data if self.needs_data else None, seed=seed
        )


FOLDING_MODES: dict[str, str] = {m.name: m.fixed["repair"] for m in FoldingConfig.modes}
"""Sweep mode name → repair; the sweep's knob is ``keep``."""
