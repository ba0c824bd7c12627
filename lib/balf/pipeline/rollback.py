"""Putting the caller's model back when an in-place compression fails half way.

With ``inplace=True`` the factorized layers are installed in the caller's only model, one by one
(block by block installs a block's layers, then runs the next block). An error in between — the
documented shape or value check of a layer, a block the data cannot run, an interrupt (Ctrl-C)
— would leave the model with some layers factorized and others dense. :class:`Rollback` records
what the installation changes (the dense module under every name of each replaced layer, the
``nn.MultiheadAttention`` modules unpacked for good, the nested-tensor flag of each
``nn.TransformerEncoder``) and puts it all back, so the model is the one the caller passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

from balf.layers.attention import attention_to_unpack

__all__ = ["Rollback"]


class Rollback:
    """What an in-place compression of ``model`` may change, recorded before it does.

    Args:
        model: the caller's model (compressed in place).
        replaced: the names of the layers to replace.
        targets: the dense layer of each name (the modules put back).
        aliases: every name each layer is registered under.
    """

    def __init__(
        self,
        model: nn.Module,
        replaced: Iterable[str],
        targets: Mapping[str, nn.Module],
        aliases: Mapping[str, list[str]],
    ) -> None:
        replaced = list(replaced)
        self.model = model
        self.layers = {alias: targets[n] for n in replaced for alias in aliases[n] if alias}
        unpacked = attention_to_unpack(model, [a for n in replaced for a in aliases[n]])
        self.attention = {name: model.get_submodule(name) for name in sorted(unpacked)}
        self.encoders = {
            name: m.use_nested_tensor
            for name, m in model.named_modules()
            if isinstance(m, nn.TransformerEncoder)
        }

    def changed(self) -> list[str]:
        """The layer names whose module is no longer the dense one (installed so far)."""
        current = {alias: _get(self.model, alias) for alias in self.layers}
        return [a for a, dense in self.layers.items() if current[a] not in (None, dense)]

    def restore(self) -> list[str]:
        """Put every recorded module and flag back; returns the layer names that had been
        replaced."""
        changed = self.changed()
        for alias, dense in self.layers.items():  # also inside unpacked attention modules
            if _get(self.model, alias) is not None:
                self.model.set_submodule(alias, dense)
        for name, attention in self.attention.items():
            self.model.set_submodule(name, attention)
        for name, flag in self.encoders.items():
            self.model.get_submodule(name).use_nested_tensor = flag
        return changed


def _get(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None
