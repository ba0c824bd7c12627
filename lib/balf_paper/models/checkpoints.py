"""Checkpoint files of the models this repository trains: weights plus plain metadata, written
atomically (``balf-checkpoint-v1``)."""

from __future__ import annotations

import numbers
import os
import pickle
from pathlib import Path
from typing import Any

import numpy
import torch
from torch import nn

from balf.errors import BALFError
from balf.io.atomic import atomic_torch_save

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "balf-checkpoint-v1"


def _plain(value: Any) -> Any:
    """Convert metadata to builtin types that ``torch.load(weights_only=True)`` accepts.

    ``str`` subclasses (e.g. ``torch.__version__``) and paths become ``str``, numpy scalars
    become ``int``/``float``/``bool``, tuples become lists.
    """
    if value is None:
        return None
    if isinstance(value, str | os.PathLike):
        return os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if isinstance(value, bool | numpy.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    raise BALFError(f"Checkpoint metadata must be plain data, got {type(value).__name__}")


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike, *, extra: dict[str, Any] | None = None, **metadata
) -> Path:
    """Atomically write ``model``'s weights and JSON-like metadata to ``path``.

    The file is written to a temporary file in the same directory and moved into place with
    ``os.replace``, so an interrupted write never leaves a truncated checkpoint.

    Args:
        model: the module whose ``state_dict`` is stored.
        path: destination file (parent directories are created).
        extra: further top-level entries (e.g. optimizer state) stored next to the weights;
            they must be loadable with ``torch.load(weights_only=True)``.
        **metadata: plain values (str, int, float, bool, lists/dicts of them) such as
            ``arch="resnet20", dataset="cifar10", test_acc=0.92``.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = dict(extra or {})
    payload.update(
        {
            "format": CHECKPOINT_FORMAT,
            "state_dict": model.state_dict(),
            "metadata": _plain(metadata),
        }
    )
    atomic_torch_save(payload, path)
    return path


def load_checkpoint(
    model: nn.Module, path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load weights written by :func:`save_checkpoint` into ``model`` (strictly).

    Args:
        model: a module with the same architecture as the saved one.
        path: checkpoint file.
        map_location: where to put the loaded tensors before copying them into ``model``.

    Returns:
        The metadata stored with the weights.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        BALFError: if the file is not a balf checkpoint.

    Example:
        >>> model = create_model("resnet20", pretrained=False, in_channels=1)
        >>> meta = load_checkpoint(model, "results/fashion-mnist/checkpoints/resnet20/model.pt")
    """
    payload = _read_torch_file(
        Path(path), map_location, "a checkpoint written by balf_paper.models.save_checkpoint"
    )
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise BALFError(f"{path} is not a balf checkpoint (written by save_checkpoint)")
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise BALFError(
            f"{path} does not match {type(model).__name__} (another --model?): {exc}"
        ) from exc
    return dict(payload["metadata"])


_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def _read_torch_file(path: Path, map_location: str | torch.device, expected: str) -> Any:
    """``torch.load(path, weights_only=True)``, or a BALFError saying what the file is instead.

    Args:
        expected: what the file should be, for the message (``"a balf checkpoint"``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        BALFError: the file is a Git LFS pointer (the weights were never fetched), empty or
            truncated, not a PyTorch file, or holds objects ``weights_only`` loading refuses
            (nothing is unpickled beyond tensors and plain data).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LFS_POINTER))
    except IsADirectoryError:
        raise BALFError(f"{path} is a folder, not {expected}; pass the file") from None
    if head == _LFS_POINTER:
        raise BALFError(
            f"{path} is a Git LFS pointer, not the weights: fetch them (git lfs pull) or pass "
            "the downloaded file"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            raise BALFError(
                f"{path} holds Python objects other than tensors and plain data, which balf "
                "does not unpickle (weights_only=True); save the state_dict instead of the "
                "model object (balf_paper.models.save_checkpoint)"
            ) from None
        raise BALFError(f"{path} is not {expected}: it cannot be unpickled ({exc})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise BALFError(
            f"{path} is not {expected}: it is empty, truncated or of another format "
            f"({type(exc).__name__}: {str(exc).split('. ')[0]}); "
            "copy or train it again"
        ) from None
