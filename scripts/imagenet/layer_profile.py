"""Where a budget cuts: per-layer ranks, kept MACs and kept output energy of compressed models.

For each ``--ratios`` value of ``--mode``, compress the model (statistics from the cache when
present; nothing is evaluated) and write, below ``--out-dir`` (default
``results/<dataset>/<model>/layer-profile``): ``<mode>[-foldbn].json`` (per-layer rows, depth
summary, command, environment), ``.md`` (depth summary table) and ``.png``/``.pdf`` (energy lost
and MACs kept per layer). ``--fold-bn`` folds every BatchNorm into its conv first (the objective
then measures errors after BatchNorm's per-channel scaling). ``--evaluate`` also measures each
compressed model's top-1 accuracy on the evaluation set (``--eval-size`` images, default all).
Defaults come from ``configs/<dataset>_factorize_sweep.yaml``.

Example:
    python scripts/imagenet/layer_profile.py --dataset imagenet-samples --model mobilenet_v2_q8 \\
        --mode flops_auto --ratios 0.8 0.9 0.97
"""

from __future__ import annotations

import argparse
from pathlib import Path

from balf.io.atomic import atomic_json_dump, atomic_write_text
from balf.io.cache import Cache
from balf.io.export import fold_batchnorm
from balf.pipeline.compressor import Compressor
from balf.ranks.modes import mode_spec
from balf_paper.data import make_loader
from balf_paper.data.registry import registered_datasets
from balf_paper.experiments.benchmarks.layer_profile import (
    depth_summary,
    layer_rows,
    plot_profiles,
    summary_markdown,
)
from balf_paper.experiments.cli.options import (
    add_common_arguments,
    configure_process,
    parse_with_yaml,
    pop_dataset,
    run_script,
)
from balf_paper.experiments.environment import command_line, environment_info
from balf_paper.experiments.render.labels import dataset_label
from balf_paper.experiments.tasks.image.data import experiment_data, experiment_model
from balf_paper.experiments.tasks.image.evaluation import evaluate


def main(argv: list[str] | None = None) -> None:
    """Run the profile; see the module docstring."""
    dataset, argv = pop_dataset(argv, registered_datasets(), "imagenet-samples")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--mode", default="flops_auto", help="a BALF or baseline mode")
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.8, 0.9, 0.97])
    parser.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the convs")
    parser.add_argument("--out-dir", default=None, help="output folder")
    parser.add_argument("--evaluate", action="store_true", help="top-1 of each compressed model")
    parser.add_argument("--modes", nargs="+", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n-iters", type=int, default=300, help="allocator iterations")
    args = parse_with_yaml(parser, argv, f"{dataset}_factorize_sweep.yaml")
    configure_process(args)
    eval_size = args.eval_size if args.evaluate else 1
    data = experiment_data(
        dataset, args.data_root, args.model, args.calib_size, args.seed, eval_size
    )
    model, weights = experiment_model(
        dataset, args.model, args.checkpoint, pretrained=not args.random_weights, seed=args.seed
    )
    example = data.evaluation[0][0].unsqueeze(0)
    tag = data.data_tag
    if args.fold_bn:
        model, tag = fold_batchnorm(model, example), tag + "-foldbn"
    cache = None if args.no_cache else Cache(args.cache_root, tag, args.calib_size)
    loader = make_loader(data.calibration, args.batch_size, args.workers)
    compressor = Compressor(model, loader, cache=cache, progress=not args.no_progress)
    spec = mode_spec(args.mode)
    options = {"n_iters": args.n_iters} if spec.accepts("n_iters") else {}
    profiles = {}
    for ratio in args.ratios:
        small, report = compressor.compress(spec.make(ratio, **options))
        rows = layer_rows(model, report)
        label = f"{args.mode} {ratio:g}" + (" (BN folded)" if args.fold_bn else "")
        if args.evaluate:
            loader_eval = make_loader(data.evaluation, args.batch_size, args.workers)
            result = evaluate(small, loader_eval, args.device, progress=not args.no_progress)
            accuracy: float | None = result.accuracy
        else:
            accuracy = None
        profiles[label] = {
            "ratio": ratio,
            "accuracy": accuracy,
            "eval_samples": len(data.evaluation) if args.evaluate else 0,
            "layer_flops_ratio": report.layer_flops_ratio,
            "rows": rows,
            "summary": depth_summary(rows),
        }
        del small
    out = Path(args.out_dir or Path(args.out_root) / dataset / args.model / "layer-profile")
    stem = out / (args.mode + ("-foldbn" if args.fold_bn else ""))
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": command_line(getattr(args, "argv", None)),
        "environment": environment_info(args.device),
        "dataset": dataset,
        "model": args.model,
        "weights": weights,
        "calib_size": args.calib_size,
        "fold_bn": args.fold_bn,
        "profiles": profiles,
    }
    atomic_json_dump(payload, stem.with_suffix(".json"))
    atomic_write_text(summary_markdown(profiles), stem.with_suffix(".md"))
    title = f"{args.model} on {dataset_label(dataset)}: where {args.mode} cuts"
    plot_profiles(profiles, stem, title)
    print(summary_markdown(profiles))


if __name__ == "__main__":
    run_script(main)
