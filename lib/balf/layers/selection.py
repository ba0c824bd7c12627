"""Choosing the layers to compress, by module name.

The default candidate set is every module with a registered layer kind
(:func:`balf.register_layer_kind`) plus every other convolution-like module; those that
cannot be factorized are reported with the reason instead of being silently ignored:
a padding mode the kind cannot express, a type without a kind (``nn.Conv3d``,
``nn.ConvTranspose2d``, …), or a child of a module that uses its weights without calling it
(an ``nn.MultiheadAttention`` that cannot be unpacked).

``nn.MultiheadAttention`` modules are resolved as unpacked (:mod:`balf.layers.attention`): their
projections are the layers ``<attention>.in_proj`` (or ``q_proj``/``k_proj``/``v_proj``) and
``<attention>.out_proj``. ``layers=`` and ``exclude=`` take module names, glob patterns
(``"encoder.*.mlp.*"``) or name suffixes (``"q_proj"`` matches
``"model.layers.0.self_attn.q_proj"``, as peft's ``target_modules``); an ``exclude=`` entry
naming a container excludes the layers inside it.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from torch import nn
from torch.nn.modules.conv import _ConvNd

from balf.errors import BALFError
from balf.layers.attention import temporarily_unpacked, unpack_reason
from balf.layers.dispatch import unsupported_reason
from balf.layers.kind import kind_for

__all__ = ["LayerSelection", "module_aliases", "resolve_layers", "tied_reason"]

# Containers whose forward reads their children's weights directly (functional calls): the
# children are never called as modules, so no statistics reach them and replacing them breaks
# the container.
_OPAQUE_CONTAINERS: dict[type[nn.Module], str] = {
    nn.MultiheadAttention: (
        "inside nn.MultiheadAttention used as the whole model, whose forward uses the weights "
        "without calling this module; wrap it in a module to compress its projections"
    ),
}
# Module types listed as skipped (with the reason) when they have no kind.
_LOOKS_FACTORIZABLE: tuple[type[nn.Module], ...] = (_ConvNd, nn.Linear, nn.Bilinear)


def _opaque_children(modules: dict[str, nn.Module]) -> dict[str, str]:
    """Names of modules nested in an opaque container, with the reason."""
    out: dict[str, str] = {}
    for name, module in modules.items():
        reason = next((r for t, r in _OPAQUE_CONTAINERS.items() if isinstance(module, t)), None)
        if reason is None:
            continue
        if isinstance(module, nn.MultiheadAttention):
            reason = unpack_reason(module) or reason
        for child, _ in module.named_modules():
            if child:
                out.setdefault(f"{name}.{child}" if name else child, reason)
    return out


def _reason(name: str, module: nn.Module, opaque: dict[str, str]) -> str | None:
    return opaque.get(name) or unsupported_reason(module)


def _is_pattern(entry: str) -> bool:
    return any(c in entry for c in "*?[")


def _matches(entry: str, names: Iterable[str]) -> list[str]:
    """Names ``entry`` selects: itself, the names its glob pattern matches, or (peft-style) the
    names ending in ``"." + entry``."""
    names = list(names)
    if entry in names:
        return [entry]
    if _is_pattern(entry):
        return [n for n in names if fnmatch.fnmatchcase(n, entry)]
    return [n for n in names if n.endswith("." + entry)]


def _no_match(entry: str, names: list[str], what: str) -> BALFError:
    close = difflib.get_close_matches(entry, [n for n in names if n], n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return BALFError(
        f"unknown {what} {entry!r}: no module of the model has this name, matches this glob "
        f"pattern or ends with '.{entry}'.{hint}"
    )


def _entries(value: Iterable[str] | None, option: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise BALFError(
            f"`{option}` must be a list of module names or patterns, got the string {value!r} "
            f"(write [{value!r}])"
        )
    entries = list(value)
    if not entries and option == "layers":
        raise BALFError("`layers` is empty: pass None to compress every supported layer")
    return entries


def resolve_layers(
    model: nn.Module,
    layers: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Split a model's layers into those to factorize and those left untouched.

    Args:
        model: the network. Its ``nn.MultiheadAttention`` modules are resolved as unpacked
            (their projections ``<name>.in_proj``/``<name>.out_proj`` are layers; see
            :mod:`balf.layers.attention`); the model itself is left as it is.
        layers: module names, glob patterns (``"blocks.*.mlp.fc1"``) or name suffixes
            (``"q_proj"``) to factorize; ``None`` means every supported layer.
        exclude: names, patterns or suffixes of layers to leave dense (listed in ``skipped``);
            one that names a container (``"model.layers.0"``, ``"self_attn"``, ``"*.mlp"``)
            leaves every layer inside it dense.

    Returns:
        ``(targets, skipped)``: supported modules by name (in model order), and the modules left
        untouched with the reason: the Conv2d/Linear-like modules that cannot be factorized
        (for the default selection and patterns), the excluded ones, and always the layers
        whose weight or bias is shared with another module (tied weights: factorizing one user
        of the tensor would add parameters and break the tie). A module registered under
        several names is one target, under its first name (see :func:`module_aliases`).

    Raises:
        BALFError: a requested name or pattern matches nothing, an exact name names a layer
            that cannot be factorized, or an ``exclude`` entry matches nothing.
    """
    requested = _entries(layers, "layers")
    excluded = _entries(exclude, "exclude")
    with temporarily_unpacked(model):
        return _resolve(model, requested, excluded)


def _resolve(
    model: nn.Module, requested: list[str] | None, excluded: list[str] | None
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    modules = dict(model.named_modules())
    opaque = _opaque_children(modules)
    names = list(modules)
    candidates = [
        n
        for n, m in modules.items()
        if kind_for(m) is not None or isinstance(m, _LOOKS_FACTORIZABLE)
    ]
    targets: dict[str, nn.Module] = {}
    skipped: dict[str, str] = {}
    if requested is None:
        chosen = candidates
    else:
        chosen = []
        for entry in requested:
            if entry in modules:
                reason = _reason(entry, modules[entry], opaque)
                if reason is not None:
                    raise BALFError(f"layer {entry!r} cannot be factorized: {reason}")
                chosen.append(entry)
                continue
            found = _matches(entry, candidates)
            if not found:
                raise _no_match(entry, names, "layer name")
            chosen += found
    for name in dict.fromkeys(chosen):
        reason = _reason(name, modules[name], opaque)
        if reason is None:
            targets[name] = modules[name]
        else:
            skipped[name] = reason
    for entry in excluded or []:
        found = _matches(entry, names)
        if not found:
            raise _no_match(entry, names, "`exclude` entry")
        for name in found:  # a container (a block, an attention) excludes the layers inside
            inside = [t for t in targets if t == name or not name or t.startswith(name + ".")]
            for target in inside:
                del targets[target]
                skipped[target] = f"excluded by exclude={entry!r}"
    order = {name: i for i, name in enumerate(modules)}
    firsts: dict[int, str] = {}
    for name, module in sorted(targets.items(), key=lambda kv: order[kv[0]]):
        firsts.setdefault(id(module), name)  # an aliased module once, under its first name
    targets = {name: targets[name] for name in sorted(firsts.values(), key=order.get)}
    return _drop_tied(model, targets, skipped)


def module_aliases(model: nn.Module) -> dict[str, list[str]]:
    """Every name of each module registered under several names, keyed by its first name.

    Example: after ``self.q = self.p``, ``{"p": ["p", "q"]}`` (and likewise for submodules).
    """
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    return {n[0]: n for n in names.values() if len(n) > 1}


def tied_reason(model: nn.Module, name: str) -> str | None:
    """Why layer ``name`` shares its weight or bias with another module, or ``None``."""
    module = model.get_submodule(name)
    mine = {id(p): key for key, p in module.named_parameters(recurse=False)}
    firsts: dict[int, str] = {}
    for other_name, other in model.named_modules(remove_duplicate=False):
        if other is module or id(other) in firsts:
            continue
        firsts[id(other)] = other_name
        for key, p in other.named_parameters(recurse=False):
            if id(p) in mine:
                return (
                    f"{mine[id(p)]} shared with {other_name}.{key} (tied parameters are kept dense)"
                )
    return None


def _drop_tied(
    model: nn.Module, targets: dict[str, nn.Module], skipped: dict[str, str]
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    owners: dict[int, set[int]] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), set()).add(id(module))
    for name in list(targets):
        if any(len(owners[id(p)]) > 1 for p in targets[name].parameters(recurse=False)):
            skipped[name] = tied_reason(model, name) or "parameters shared with another module"
            del targets[name]
    return targets, skipped


@dataclass
class LayerSelection:
    """The layers to factorize and those left dense, as a :class:`balf.Compressor` keeps them.

    Attributes:
        targets: the layers to factorize by (first) name, in model order.
        aliases: every name each target is registered under (``[name]`` when only one).
        skipped: the layers left dense, with the reason.
    """

    targets: dict[str, nn.Module]
    aliases: dict[str, list[str]]
    skipped: dict[str, str]

    @classmethod
    def of(
        cls,
        model: nn.Module,
        layers: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
    ) -> LayerSelection:
        """The selection of :func:`resolve_layers`; raises when no layer can be factorized."""
        targets, skipped = resolve_layers(model, layers, exclude)
        if not targets:
            reasons = "; ".join(f"{n}: {r}" for n, r in skipped.items())
            raise BALFError(
                "the model has no supported layer (e.g. Conv2d, Linear) to compress"
                + (f" (skipped: {reasons})" if reasons else "")
            )
        with temporarily_unpacked(model):  # attention projections are layers
            aliases = module_aliases(model)
        return cls(targets, {n: aliases.get(n, [n]) for n in targets}, skipped)

    def skip(self, reasons: Mapping[str, str]) -> None:
        """Leave the layers ``reasons`` names dense, listing them in ``skipped``.

        Raises:
            BALFError: no layer to factorize is left.
        """
        for name, reason in reasons.items():
            self.targets.pop(name, None)
            self.aliases.pop(name, None)
            self.skipped[name] = reason
        if reasons and not self.targets:
            listed = "; ".join(f"{n}: {r}" for n, r in list(reasons.items())[:5])
            raise BALFError(f"no chosen layer is called by the model's forward pass ({listed})")
