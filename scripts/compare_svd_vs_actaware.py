"""Plain SVD vs activation-aware factorization of single layers (experiment 7).

For a Linear, a Conv2d and a grouped Conv2d layer, the normalised output error
``‖Y − Ŷ‖² / ‖Y‖²`` (``Y``: the dense layer's pre-bias outputs, ``Ŷ``: the rank-r layer's; the bias
is kept as is, so it cancels in ``Y − Ŷ``) is measured at every kept-rank ratio ``r / R``
(``r = ⌈ratio·R⌉``, the rule of ``balf.RankRatioConfig``), on the calibration inputs and on
held-out inputs, for plain SVD of the weights (``activation_aware=False``) and for BALF's
activation-aware factors. On the calibration data the activation-aware error is the
Eckart–Young minimum ``1 − e(r)`` (stored as ``bound``), so it is never above plain SVD's.

The library's own code path is used: ``balf.collect_statistics`` on the calibration inputs,
``balf.decompose_layer`` (with statistics, or ``None`` for plain SVD) and the factorized module
built by ``balf.factorize_layer`` — the one ``balf.compress`` installs. (``balf.compress``
itself is not called because it keeps a layer dense wherever the low-rank form is not strictly
cheaper, which would hide the upper half of every curve.)

Sources of layers:

- ``--source synthetic``: random layers (default PyTorch init) fed with correlated, anisotropic
  inputs: a decaying channel spectrum (``σ_i ∝ i^-decay`` under a random rotation); for the convs
  the maps are also spatially smoothed (3×3 mean) and rectified, as post-ReLU feature maps are.
  A Linear (``--linear-in`` → ``--linear-out``, ``--tokens`` vectors per sample), a 3×3 Conv2d
  (``--conv-channels``) and a 3×3 grouped Conv2d (``--grouped-channels``, ``--groups``).
- ``--source checkpoint``: layers of a trained model (default ResNet-20 on Fashion-MNIST) fed
  with their real input activations, captured by forward pre-hooks on real images
  (``balf.experiments.datasets.experiment_data``: calibration = seeded training subset,
  held-out = test subset): the classifier ``fc`` (``--linear-layer``), a 3×3 conv
  (``--conv-layer``), and — CIFAR ResNets have no grouped conv — a grouped 3×3 conv with
  ``--groups`` groups whose filters are the block-diagonal part of the trained conv
  ``--grouped-layer`` (group g keeps the weights from input block g to output block g), fed with
  that conv's real input activations.

Outputs in ``--out-dir`` (default ``results/svd_vs_actaware``): ``svd_vs_actaware_<source>.json``
(``{"source", "command", "environment", "config", "layers": [{"panel", "name", "description",
"geometry": {"groups", "in_dim", "out_dim", "max_rank"}, "calibration_rows", "heldout_rows",
"points": [{"ratio", "rank", "rank_fraction", "bound", "svd": {"calibration", "heldout"},
"act_aware": {"calibration", "heldout"}}]}]}``) and ``.pdf``/``.png``, a figure with three panels
rendered from the JSON (``--plot-only`` re-renders it).

Example:
    python scripts/compare_svd_vs_actaware.py --source synthetic
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

import balf
from balf import factorize_layer
from balf._io import atomic_json_dump
from balf.data import make_loader
from balf.experiments.cli import parse_with_yaml, run_script
from balf.experiments.datasets import experiment_data, experiment_model
from balf.experiments.environment import command_line, environment_info
from balf.experiments.plots import save_figure
from balf.rank_rules import rank_ratio_rank
from balf.representation import geometry_of

log = logging.getLogger("compare_svd_vs_actaware")

PANELS = ("linear", "conv", "grouped_conv")


def build_parser() -> argparse.ArgumentParser:
    """Options; defaults come from ``configs/compare_svd_vs_actaware.yaml``."""
    p = argparse.ArgumentParser(description="Plain SVD vs activation-aware: single-layer errors.")
    p.add_argument("--source", choices=["synthetic", "checkpoint"], default="synthetic")
    p.add_argument(
        "--ratios", nargs="+", type=float, default=[round(0.05 * i, 2) for i in range(1, 21)]
    )
    p.add_argument("--calib-size", type=int, default=256, help="calibration samples (images)")
    p.add_argument("--heldout-size", type=int, default=256, help="held-out samples (images)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out-dir", default="results/svd_vs_actaware")
    p.add_argument("--plot-only", action="store_true", help="re-render the figure from the JSON")
    g = p.add_argument_group("synthetic layers")
    g.add_argument("--linear-in", type=int, default=256)
    g.add_argument("--linear-out", type=int, default=256)
    g.add_argument("--tokens", type=int, default=16, help="input vectors per Linear sample")
    g.add_argument("--conv-channels", type=int, default=64)
    g.add_argument("--grouped-channels", type=int, default=128)
    g.add_argument("--groups", type=int, default=8, help="groups of the grouped conv")
    g.add_argument("--spatial", type=int, default=16, help="side of the synthetic feature maps")
    g.add_argument("--decay", type=float, default=1.0, help="input spectrum σ_i ∝ i^-decay")
    c = p.add_argument_group("checkpoint layers")
    c.add_argument("--dataset", default="fashion-mnist")
    c.add_argument("--model", default="resnet20")
    c.add_argument("--checkpoint", default=None, help="weights (default: the repo's checkpoint)")
    c.add_argument(
        "--data-root",
        default=None,
        help="dataset folder (default: datasets/ for cifar10, the standard search path for "
        "fashion-mnist)",
    )
    c.add_argument("--linear-layer", default="fc")
    c.add_argument("--conv-layer", default="layer2.1.conv1")
    c.add_argument("--grouped-layer", default="layer3.1.conv1")
    return p


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
    """``(n, tokens, D)`` vectors ``z Mᵀ`` with ``z`` standard normal."""
    z = torch.randn(n, tokens, mixing.shape[0], generator=g)
    return z @ mixing.t()


def synthetic_maps(n: int, side: int, mixing: Tensor, g: torch.Generator) -> Tensor:
    """``(n, C, side, side)`` smoothed, channel-mixed, rectified feature maps."""
    z = torch.randn(n, mixing.shape[0], side, side, generator=g)
    z = F.avg_pool2d(z, 3, stride=1, padding=1, count_include_pad=False)
    return torch.relu(torch.einsum("cd,ndhw->nchw", mixing, z))


def synthetic_cases(args: argparse.Namespace) -> list[LayerCase]:
    """A random Linear, Conv2d and grouped Conv2d with anisotropic inputs."""
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

    Output block ``g`` (``C_out/groups`` filters) keeps only the weights reading input block ``g``.
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


def capture_inputs(model: nn.Module, names: Sequence[str], loader) -> dict[str, Tensor]:
    """Inputs of the modules ``names`` over all batches of ``loader``, concatenated on the CPU."""
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


# -- errors ------------------------------------------------------------------------------------


def dense_outputs(layer: nn.Module, x: Tensor, batch_size: int) -> tuple[Tensor, float]:
    """The dense layer's outputs ``Y`` (same leading dims as ``x``) and ``‖Y − bias‖²``."""
    device = next(layer.parameters()).device
    outs, norm = [], 0.0
    with torch.no_grad():
        for xb in x.split(batch_size):
            y = layer(xb.to(device))
            y_pre = y
            if layer.bias is not None:
                shape = (-1, 1, 1) if isinstance(layer, nn.Conv2d) else (-1,)
                y_pre = y - layer.bias.view(shape)
            norm += y_pre.double().square().sum().item()
            outs.append(y)
    return torch.cat(outs), norm


def output_error(approx: nn.Module, x: Tensor, y: Tensor, y_norm: float, batch_size: int) -> float:
    """``‖Y − Ŷ‖² / ‖Y_pre-bias‖²`` of ``approx`` on inputs ``x`` given the dense outputs ``y``."""
    device = y.device
    num = 0.0
    with torch.no_grad():
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
            num += (yb - approx(xb.to(device))).double().square().sum().item()
    return num / y_norm if y_norm > 0 else 0.0


def layer_curves(case: LayerCase, ratios: Sequence[float], batch_size: int) -> dict[str, Any]:
    """Errors of both factorizations of ``case.layer`` at every ratio (see the module doc)."""
    layer = case.layer.eval()
    stats = balf.collect_statistics(
        nn.Sequential(layer), case.calibration, batch_size=batch_size, progress=False
    )
    decs = {
        "svd": balf.decompose_layer(layer, None),
        "act_aware": balf.decompose_layer(layer, stats.layers["0"]),
    }
    energies = decs["act_aware"].energies().cpu()
    splits = {
        "calibration": (case.calibration, *dense_outputs(layer, case.calibration, batch_size)),
        "heldout": (case.heldout, *dense_outputs(layer, case.heldout, batch_size)),
    }
    geo = geometry_of(layer)
    points = []
    for ratio in ratios:
        rank = rank_ratio_rank(geo, ratio)
        point: dict[str, Any] = {
            "ratio": ratio,
            "rank": rank,
            "rank_fraction": rank / geo.max_rank,
            "bound": max(0.0, 1.0 - float(energies[rank - 1])),
        }
        for kind, dec in decs.items():
            approx = factorize_layer(layer, dec, rank).eval()
            point[kind] = {
                split: output_error(approx, x, y, norm, batch_size)
                for split, (x, y, norm) in splits.items()
            }
        points.append(point)
    rows_per_sample = stats.rows_per_sample("0")
    return {
        "panel": case.panel,
        "name": case.name,
        "description": case.description,
        "geometry": {
            "groups": geo.groups,
            "in_dim": geo.in_dim,
            "out_dim": geo.out_dim,
            "max_rank": geo.max_rank,
        },
        "calibration_rows": int(rows_per_sample * len(case.calibration)),
        "heldout_rows": int(rows_per_sample * len(case.heldout)),
        "points": points,
    }


# -- figure ------------------------------------------------------------------------------------


def plot_curves(results: dict[str, Any], stem: Path) -> list[Path]:
    """One panel per layer: both methods, held-out (solid) and calibration (dashed) errors."""
    layers = results["layers"]
    fig = Figure(figsize=(4.3 * len(layers), 3.7))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    styles = {"svd": ("tab:blue", "plain SVD"), "act_aware": ("tab:orange", "activation-aware")}
    for ax, layer in zip(axes, layers, strict=True):
        x = [p["rank_fraction"] for p in layer["points"]]
        for kind, (color, label) in styles.items():
            for split, ls, marker in (("heldout", "-", "o"), ("calibration", "--", "x")):
                y = [p[kind][split] for p in layer["points"]]
                ax.plot(x, y, ls, color=color, marker=marker, ms=4, label=f"{label} ({split})")
        geo = layer["geometry"]
        ax.set_title(
            f"{layer['panel'].replace('_', ' ')}: G={geo['groups']}, "
            f"D={geo['in_dim']}, K={geo['out_dim']}",
            fontsize=10,
        )
        ax.set_xlabel("kept-rank ratio r / R")
        ax.set_ylabel("‖Y − Ŷ‖² / ‖Y‖²")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Plain SVD vs activation-aware factorization ({results['source']} layers)")
    fig.tight_layout()
    return save_figure(fig, stem)


def main(argv: list[str] | None = None) -> None:
    """Measure both factorizations on the three layers and write JSON + figure."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_with_yaml(build_parser(), argv, "compare_svd_vs_actaware.yaml")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stem = Path(args.out_dir) / f"svd_vs_actaware_{args.source}"
    json_path = stem.with_suffix(".json")
    if args.plot_only:
        results = json.loads(json_path.read_text())
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        dtype = getattr(torch, args.dtype)
        cases = synthetic_cases(args) if args.source == "synthetic" else checkpoint_cases(args)
        layers = []
        for case in cases:
            case.layer = case.layer.to(device=args.device, dtype=dtype)
            case.calibration = case.calibration.to(dtype)
            case.heldout = case.heldout.to(dtype)
            log.info("%s: %s", case.panel, case.description)
            layers.append(layer_curves(case, args.ratios, args.batch_size))
        results = {
            "source": args.source,
            "command": command_line(argv),
            "environment": environment_info(args.device),
            "config": vars(args),
            "layers": layers,
        }
        atomic_json_dump(results, json_path)
        for layer in layers:
            print(f"{layer['panel']:>12}  {layer['description']}")
            print("    ratio  rank   svd(held)  aa(held)   svd(cal)   aa(cal)    bound")
            for p in layer["points"]:
                print(
                    f"    {p['ratio']:5.2f}  {p['rank']:4d}  {p['svd']['heldout']:9.4f}  "
                    f"{p['act_aware']['heldout']:9.4f}  {p['svd']['calibration']:9.4f}  "
                    f"{p['act_aware']['calibration']:9.4f}  {p['bound']:7.4f}"
                )
    paths = plot_curves(results, stem)
    print(f"\nwritten: {json_path}, {', '.join(map(str, paths))}")


if __name__ == "__main__":
    run_script(main)
