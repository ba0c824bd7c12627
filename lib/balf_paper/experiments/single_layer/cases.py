"""The layers of the single-layer study and their inputs: synthetic, or from a trained model.

- :func:`synthetic_cases`: random layers (default PyTorch init) fed with correlated, anisotropic
  inputs, a decaying channel spectrum (``σ_i ∝ i^-decay`` under a random rotation); the convs'
  maps are also spatially smoothed (3×3 mean) and rectified, as post-ReLU feature maps are.
- :func:`checkpoint_cases`: layers of a trained model fed with their real input activations,
  captured by forward pre-hooks; CIFAR ResNets have no grouped conv, so the grouped panel is the
  block-diagonal part of a trained conv (:func:`block_diagonal_conv`) on that conv's inputs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from balf_paper.data import make_loader
from balf_paper.experiments.tasks.image.data import experiment_data, experiment_model

__all__ = [
    "CASE_SOURCES",
    "LayerCase",
    "block_diagonal_conv",
    "capture_inputs",
    "checkpoint_cases",
    "synthetic_cases",
    "synthetic_maps",
    "synthetic_vectors",
]


@dataclass
class LayerCase:
    """One panel: a layer and its inputs.

    Attributes:
        panel: ``"linear"``, ``"conv"`` or ``"grouped_conv"``.
        name: the layer's name (module path, or a synthetic label).
        description: what the layer and its inputs are.
        layer: an ``nn.Linear`` or ``nn.Conv2d``.
        calibration: inputs ``(N, *, D)`` (Linear) or ``(N, C_in, H, W)`` (Conv2d).
        heldout: held-out inputs of the same shape but ``N``.
    """

    panel: str
    name: str
    description: str
    layer: nn.Module
    calibration: Tensor
    heldout: Tensor


# -- synthetic layers --------------------------------------------------------------------------


def _mixing(channels: int, decay: float, g: torch.Generator) -> Tensor:
    """``Q diag(s)`` ``(C, C)``: a random rotation of a spectrum ``s_i = i^-decay``."""
    q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=g))
    s = torch.arange(1, channels + 1, dtype=torch.float32).pow(-decay)
    return q * s


def synthetic_vectors(n: int, tokens: int, mixing: Tensor, g: torch.Generator) -> Tensor:
    """``(n, tokens, D)`` vectors ``z Mᵀ`` with ``z`` standard normal (``mixing``: ``(D, D)``)."""
    z = torch.randn(n, tokens, mixing.shape[0], generator=g)
    return z @ mixing.t()


def synthetic_maps(n: int, side: int, mixing: Tensor, g: torch.Generator) -> Tensor:
    """``(n, C, side, side)`` smoothed, channel-mixed, rectified maps (``mixing``: ``(C, C)``)."""
    z = torch.randn(n, mixing.shape[0], side, side, generator=g)
    z = F.avg_pool2d(z, 3, stride=1, padding=1, count_include_pad=False)
    return torch.relu(torch.einsum("cd,ndhw->nchw", mixing, z))


def synthetic_cases(args: argparse.Namespace) -> list[LayerCase]:
    """A random Linear, Conv2d and grouped Conv2d with anisotropic inputs (seed ``args.seed``)."""
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    n_c, n_h = args.calib_size, args.heldout_size
    cases = []
    m = _mixing(args.linear_in, args.decay, g)
    cases.append(
        LayerCase(
            "linear",
            "linear",
            f"Linear {args.linear_in}→{args.linear_out}",
            nn.Linear(args.linear_in, args.linear_out),
            synthetic_vectors(n_c, args.tokens, m, g),
            synthetic_vectors(n_h, args.tokens, m, g),
        )
    )
    for panel, ch, groups in (
        ("conv", args.conv_channels, 1),
        ("grouped_conv", args.grouped_channels, args.groups),
    ):
        m = _mixing(ch, args.decay, g)
        label = f"Conv2d {ch}→{ch} 3×3" + (f", groups={groups}" if groups > 1 else "")
        cases.append(
            LayerCase(
                panel,
                panel,
                label,
                nn.Conv2d(ch, ch, 3, padding=1, groups=groups, bias=False),
                synthetic_maps(n_c, args.spatial, m, g),
                synthetic_maps(n_h, args.spatial, m, g),
            )
        )
    return cases


# -- layers of a trained model -----------------------------------------------------------------


def block_diagonal_conv(conv: nn.Conv2d, groups: int) -> nn.Conv2d:
    """A ``groups``-group copy of ``conv`` keeping its block-diagonal filters.

    Output block ``g`` (``C_out/groups`` filters) keeps only the weights reading input block ``g``:
    the copy's weight is ``(C_out, C_in/groups, kh, kw)``.
    """
    c_in, c_out = conv.in_channels, conv.out_channels
    if conv.groups != 1 or c_in % groups or c_out % groups:
        raise ValueError(f"cannot split a {c_in}→{c_out} conv into {groups} groups")
    out = nn.Conv2d(
        c_in,
        c_out,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=groups,
        bias=conv.bias is not None,
    )
    ki, ko = c_in // groups, c_out // groups
    with torch.no_grad():
        for gi in range(groups):
            block = conv.weight[gi * ko : (gi + 1) * ko, gi * ki : (gi + 1) * ki]
            out.weight[gi * ko : (gi + 1) * ko] = block
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    return out


def capture_inputs(model: nn.Module, names: Sequence[str], loader: Iterable) -> dict[str, Tensor]:
    """Inputs of the modules ``names`` over all batches of ``loader``, concatenated on the CPU.

    Returns:
        per name, the module's inputs ``(N, ...)`` over the ``N`` samples of ``loader``.
    """
    modules = dict(model.named_modules())
    seen: dict[str, list[Tensor]] = {n: [] for n in names}
    handles = [
        modules[n].register_forward_pre_hook(
            lambda _m, inputs, n=n: seen[n].append(inputs[0].detach().cpu())
        )
        for n in names
    ]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for x, _ in loader:
                model(x.to(device))
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v) for n, v in seen.items()}


def checkpoint_cases(args: argparse.Namespace) -> list[LayerCase]:
    """Layers of a trained model with their real input activations."""
    model = experiment_model(args.dataset, args.model, args.checkpoint)[0].to(args.device)
    root = args.data_root or ("datasets" if args.dataset == "cifar10" else None)
    data = experiment_data(
        args.dataset, root, args.model, args.calib_size, args.seed, args.heldout_size
    )
    names = list(dict.fromkeys([args.linear_layer, args.conv_layer, args.grouped_layer]))
    calib = capture_inputs(model, names, make_loader(data.calibration, args.batch_size))
    held = capture_inputs(model, names, make_loader(data.evaluation, args.batch_size))
    modules = dict(model.named_modules())
    fc, conv = modules[args.linear_layer], modules[args.conv_layer]
    grouped = block_diagonal_conv(modules[args.grouped_layer], args.groups).to(args.device)
    src = f"{args.model} on {args.dataset}"
    return [
        LayerCase(
            "linear",
            args.linear_layer,
            f"{src}: {args.linear_layer} (Linear {fc.in_features}→{fc.out_features})",
            fc,
            calib[args.linear_layer],
            held[args.linear_layer],
        ),
        LayerCase(
            "conv",
            args.conv_layer,
            f"{src}: {args.conv_layer} (Conv2d {conv.in_channels}→{conv.out_channels} "
            f"{conv.kernel_size[0]}×{conv.kernel_size[1]})",
            conv,
            calib[args.conv_layer],
            held[args.conv_layer],
        ),
        LayerCase(
            "grouped_conv",
            f"{args.grouped_layer}[block-diagonal, groups={args.groups}]",
            f"{src}: block-diagonal part ({args.groups} groups) of {args.grouped_layer}, "
            "on its real inputs",
            grouped,
            calib[args.grouped_layer],
            held[args.grouped_layer],
        ),
    ]


#: ``--source`` value -> the function building the three cases from the options.
CASE_SOURCES: dict[str, Callable[[argparse.Namespace], list[LayerCase]]] = {
    "synthetic": synthetic_cases,
    "checkpoint": checkpoint_cases,
}
