"""Deploying compressed models: BatchNorm folding and ONNX export.

The factorized layers are plain ``nn.Linear``/``nn.Conv2d`` pairs, so ``torch.export.export``
and ``torch.onnx.export`` handle compressed models like any other; this module adds the two steps
a deployment (and a fair latency measurement) needs:

- :func:`fold_batchnorm`: every ``BatchNorm2d`` fed directly by a convolution (including the
  second, 1×1 convolution of a :class:`balf.LowRankConv2d`) is folded into it with torch's own
  ``torch.nn.utils.fusion.fuse_conv_bn_eval``, on a copy, and the result is checked against the
  original on an example input.
- :func:`export_onnx`: ``torch.onnx.export`` with a dynamic batch dimension, written atomically.
  Needs the ``export`` extra (``pip install -e .[export]``: onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from balf._eval_mode import eval_mode
from balf.errors import BALFError
from balf.io.atomic import atomic_write_bytes

__all__ = ["conv_bn_pairs", "export_onnx", "fold_batchnorm"]

log = logging.getLogger(__name__)


@torch.no_grad()
def conv_bn_pairs(model: nn.Module, example_input: Tensor) -> list[tuple[str, str]]:
    """``(conv name, batchnorm name)`` for every BatchNorm2d whose input is a conv's output.

    Found by one forward pass on ``example_input`` with hooks: a pair is a ``Conv2d`` and a
    ``BatchNorm2d``, each called exactly once, where the BN receives the very tensor the conv
    returned. (A conv inside a :class:`balf.LowRankConv2d` is found by its own name, e.g.
    ``layer1.0.conv1.second``.)
    """
    outputs: dict[int, str] = {}
    inputs: dict[str, int] = {}
    calls: dict[str, int] = {}
    handles = []

    def conv_hook(name):
        def hook(module, args, output):
            calls[name] = calls.get(name, 0) + 1
            outputs[id(output)] = name

        return hook

    def bn_hook(name):
        def hook(module, args):
            calls[name] = calls.get(name, 0) + 1
            inputs[name] = id(args[0])

        return hook

    keep = []  # keep outputs alive so their ids are not reused during the pass
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook(name)))
            handles.append(module.register_forward_hook(lambda m, a, o: keep.append(o)))
        elif isinstance(module, nn.BatchNorm2d):
            handles.append(module.register_forward_pre_hook(bn_hook(name)))
    was_training = model.training
    model.eval()
    try:
        model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    pairs = []
    for bn, tensor_id in inputs.items():
        conv = outputs.get(tensor_id)
        if conv is not None and calls.get(conv) == 1 and calls.get(bn) == 1:
            pairs.append((conv, bn))
    return pairs


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example_input: Tensor, atol: float = 1e-4) -> nn.Module:
    """An eval-mode copy of ``model`` with every conv→BatchNorm2d pair folded into one conv.

    Args:
        model: the network (not modified).
        example_input: one batch, e.g. ``(1, 3, H, W)``, on the model's device.
        atol: tolerance of the check against the unfolded model (relative to its output scale).

    Returns:
        The folded copy (BatchNorms replaced by ``nn.Identity``), in eval mode.

    Raises:
        BALFError: the folded copy's output differs from the original's (a conv's output was
            also used elsewhere than by its BatchNorm).
    """
    folded = copy.deepcopy(model).eval()
    pairs = conv_bn_pairs(folded, example_input)
    for conv_name, bn_name in pairs:
        conv = folded.get_submodule(conv_name)
        bn = folded.get_submodule(bn_name)
        folded.set_submodule(conv_name, fuse_conv_bn_eval(conv, bn))
        folded.set_submodule(bn_name, nn.Identity())
    with eval_mode(model):  # the caller's train/eval flags are restored
        reference = model(example_input)
    out = folded(example_input)
    scale = reference.abs().max().clamp_min(1.0)
    if not torch.allclose(out, reference, atol=atol * float(scale), rtol=1e-3):
        raise BALFError(
            "folding BatchNorm changed the model's output: some conv output feeds more than its "
            "BatchNorm; benchmark the model unfolded"
        )
    log.info("folded %d BatchNorm layers into their convolutions", len(pairs))
    return folded


def export_onnx(
    model: nn.Module,
    example_input: Tensor,
    path: str | Path,
    *,
    dynamic_batch: bool = True,
    opset_version: int | None = None,
) -> Path:
    """Export ``model`` to an ONNX file with ``torch.onnx.export`` (TorchDynamo exporter).

    Args:
        model: e.g. a compressed model (put in eval mode).
        example_input: one input batch ``(B, ...)``.
        path: the ``.onnx`` file (written atomically, weights embedded).
        dynamic_batch: let the first input dimension vary.
        opset_version: ONNX opset (default: the exporter's).

    Returns:
        ``path``.

    Raises:
        BALFError: ``onnx``/``onnxscript`` are missing (install the ``export`` extra), or
            ``path`` is a directory.

    Example:
        >>> balf.io.export.export_onnx(small, torch.randn(1, 3, 32, 32), "small.onnx")
    """
    if Path(path).is_dir():
        raise BALFError(
            f"{path} is a directory; pass the .onnx file to write, e.g. {path}/model.onnx"
        )
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise BALFError(
            f"ONNX export needs the export extra ({exc.name} is missing): pip install -e .[export]"
        ) from exc
    path = Path(path)
    model = model.eval()
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp_file = Path(tmp) / path.name
        program = torch.onnx.export(
            model,
            (example_input,),
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            opset_version=opset_version,
            external_data=False,
            verbose=False,
        )
        program.save(str(tmp_file), external_data=False)
        atomic_write_bytes(tmp_file.read_bytes(), path)
    return path
