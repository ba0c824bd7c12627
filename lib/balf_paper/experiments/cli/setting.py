"""One (dataset, model) setting of an image experiment, built from the command line's options.

:class:`ImageSetting` loads the model and the evaluation data once, draws calibration subsets
(:meth:`~ImageSetting.calibration`: a size and a seed), and makes a
:class:`~balf_paper.experiments.sweep.runner.Runner` per calibration set; every runner of the
setting shares the uncompressed model's point of each evaluation (seeds, calibration sizes,
shifted calibration sets are scored on the same images).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from balf.calibration.distributed import shard
from balf.io.cache import Cache
from balf_paper.data import make_loader
from balf_paper.data.registry import dataset_info
from balf_paper.experiments.cli.options import recorded_argv
from balf_paper.experiments.sweep.config import SweepConfig
from balf_paper.experiments.sweep.methods import strategy_for
from balf_paper.experiments.sweep.runner import DenseEvaluations, Runner, RunOptions
from balf_paper.experiments.tasks.image.data import (
    experiment_data,
    experiment_model,
    require_checkpoint,
)
from balf_paper.experiments.tasks.image.task import image_task

__all__ = ["Calibration", "ImageSetting", "save_dir_of"]


@dataclass
class Calibration:
    """A calibration set: ``(image, label)`` samples, their cache tag, size, seed, and the
    corruption applied to them (``shift``; empty: clean images)."""

    data: Dataset
    tag: str
    size: int
    seed: int
    shift: dict[str, Any] = field(default_factory=dict)


class ImageSetting:
    """Model, evaluation data and calibration draws of one (dataset, model) setting.

    ``args`` are parsed options (:func:`~balf_paper.experiments.cli.options.add_common_arguments`);
    process-wide settings are the entry point's business.
    """

    def __init__(self, args: argparse.Namespace, dataset: str):
        self.args, self.dataset = args, dataset
        # every local input is checked before anything is downloaded: the checkpoint, then
        # the data (Fashion-MNIST may be downloaded), then the weights (ImageNet: downloaded)
        if not dataset_info(dataset).public_weights and not args.random_weights:
            require_checkpoint(dataset, args.model, args.checkpoint)
        self._draws: dict[tuple[int, int], Any] = {}
        first = self._draw(args.calib_size, args.seed)
        self.model, self.weights = experiment_model(
            dataset, args.model, args.checkpoint, pretrained=not args.random_weights,
            seed=args.seed,
        )  # fmt: skip
        self.model = self.model.to(args.device)
        self.evaluation_data = first.evaluation
        # under torchrun each process calibrates and evaluates its shard; sums are all-reduced
        self.evaluation = self.loader(first.evaluation)
        self.example = first.evaluation[0][0].unsqueeze(0)
        self.dense = DenseEvaluations()
        self.evaluation_id = (
            f"{dataset}/{args.model}/{self.weights}/eval{args.eval_size}-seed{args.seed}"
        )

    def loader(self, data: Dataset) -> Any:
        """The batches of ``data`` (this process's shard under torchrun)."""
        return make_loader(shard(data), self.args.batch_size, self.args.workers)

    def _draw(self, size: int, seed: int) -> Any:
        """The calibration subset of ``size`` images drawn with ``seed``, with the evaluation
        set (``--eval-size`` images drawn with ``--seed``), made once."""
        if (size, seed) not in self._draws:
            a = self.args
            self._draws[size, seed] = experiment_data(
                self.dataset, a.data_root, a.model, size, a.seed, a.eval_size, calib_seed=seed
            )
        return self._draws[size, seed]

    def clean(self, size: int | None = None, seed: int | None = None) -> Calibration:
        """The clean calibration set of ``size`` images drawn with ``seed``."""
        size = size or self.args.calib_size
        seed = self.args.seed if seed is None else seed
        data = self._draw(size, seed)
        return Calibration(data.calibration, data.data_tag, size, seed)

    def runner(
        self,
        calibration: Calibration,
        evaluate_fn: Callable | None = None,
        evaluation: str = "clean",
    ) -> Runner:
        """A runner calibrated on ``calibration``; ``evaluate_fn`` (named ``evaluation``)
        replaces the accuracy/loss evaluation."""
        a = self.args
        task = image_task(
            self.model, self.evaluation, self.example, calibration=self.loader(calibration.data),
            device=a.device, progress=not a.no_progress, evaluate_fn=evaluate_fn,
            evaluation_id=f"{self.evaluation_id}/{evaluation}",
        )  # fmt: skip
        tag = calibration.tag + ("-random" if a.random_weights else "")
        cache = None if a.no_cache else Cache(a.cache_root, tag, calibration.size)
        options = RunOptions(
            device=a.device, cache=cache,
            progress=not a.no_progress, stop_after=a.stop_after,
            argv=recorded_argv(getattr(a, "argv", None), self.dataset),
            save_knobs=getattr(a, "save_knobs", None),
        )  # fmt: skip
        return Runner(task, options, dense=self.dense)

    def config(
        self,
        calibration: Calibration,
        mode: str,
        knobs: Sequence[float],
        n_iters: int = 300,
        evaluation: dict[str, Any] | None = None,
    ) -> SweepConfig:
        """The sweep of ``mode`` over ``knobs`` calibrated on ``calibration`` (with
        ``--strategy`` and its options; ``extra`` records the strategy object's settings)."""
        a = self.args
        strategy = getattr(a, "strategy", "whole")
        strategy_options = dict(getattr(a, "strategy_options", None) or {})
        extra: dict[str, Any] = {"data_root": str(a.data_root), "batch_size": a.batch_size}
        if strategy != "whole":
            probe = SweepConfig(self.dataset, a.model, mode, [1.0], 1, strategy=strategy,
                                strategy_options=strategy_options)  # fmt: skip
            extra["strategy"] = strategy_for(probe).to_dict()
        return SweepConfig(
            dataset=self.dataset, model=a.model, mode=mode, knobs=[float(k) for k in knobs],
            calib_size=calibration.size, seed=calibration.seed,
            eval_seed=None if calibration.seed == a.seed or a.eval_size is None else a.seed,
            calibration_shift=dict(calibration.shift), n_iters=n_iters, eval_size=a.eval_size,
            weights=self.weights, evaluation=evaluation or {}, extra=extra,
            strategy=strategy, strategy_options=strategy_options,
            method_options=dict(getattr(a, "method_options", None) or {}),
        )  # fmt: skip

    def sweep(self, runner: Runner, config: SweepConfig, run_dir: Path) -> dict[str, Any]:
        """Run ``config`` into ``run_dir`` (``--save-model``: its mirror below the save root)."""
        return runner.sweep(config, run_dir, save_dir=save_dir_of(self.args, run_dir))


def save_dir_of(args: argparse.Namespace, out_dir: Path) -> Path | None:
    """``--save-model DIR`` mirrored by the run folder's path below ``--out-root``."""
    if not getattr(args, "save_model", None):
        return None
    out_dir = Path(out_dir)
    try:
        relative = out_dir.resolve().relative_to(Path(args.out_root).resolve())
    except ValueError:
        relative = Path(out_dir.name)
    return Path(args.save_model) / relative
