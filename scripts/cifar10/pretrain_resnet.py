"""Train a CIFAR ResNet (ResNet-20/56) from scratch on CIFAR-10 or Fashion-MNIST.

Defaults (configs/pretrain_resnet.yaml) are the paper's CIFAR-10 recipe: 200 epochs, SGD lr 0.1,
momentum 0.9, weight decay 1e-4, batch 128, lr x0.1 at epochs 100 and 150, random crop (pad 4)
+ horizontal flip, per-channel normalisation. The datasets come from
``balf_paper.data.registry`` and
the training loop from ``balf_paper.experiments.training`` (augmentation on in-memory uint8 tensors,
a batch at a time); this script is the command line, run directory and resuming around them.

The run directory (``--out-dir``) holds:
  - ``last.pt``          checkpoint written atomically after every epoch (model, optimizer,
                         scheduler, RNG states, epoch, log); a rerun resumes from it;
  - ``train_log.jsonl``  one line per epoch (epoch, lr, train/test loss and accuracy, seconds);
  - ``command.txt``      command lines of every run, git commit, torch version;
  - ``config.yaml``      the resolved configuration;
  - ``model.pt``         final weights + metadata
                         (``balf_paper.models.load_checkpoint`` loads them).

Example:
    python scripts/cifar10/pretrain_resnet.py --arch resnet20 --dataset fashion-mnist \\
        --epochs 20 --schedule cosine --max-epochs-this-run 5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import torch
import yaml

from balf.errors import DatasetNotFoundError
from balf.io.atomic import atomic_write_text
from balf_paper.data.registry import dataset_info, registered_datasets
from balf_paper.experiments import environment, training
from balf_paper.experiments.cli.options import run_script
from balf_paper.experiments.training import evaluate_tensors, train_one_epoch
from balf_paper.models import create_model, load_checkpoint, save_checkpoint

logger = logging.getLogger("pretrain_resnet")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "pretrain_resnet.yaml"


def trainable_datasets() -> list[str]:
    """Registered datasets loadable as uint8 tensors (see ``balf_paper.data.registry``)."""
    return [name for name in registered_datasets() if dataset_info(name).tensors is not None]


# ----------------------------------------------------------------------------- configuration
def build_parser(defaults: dict) -> argparse.ArgumentParser:
    """Argument parser whose defaults come from the YAML config."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML file of defaults")
    p.add_argument("--arch", choices=["resnet20", "resnet56"])
    p.add_argument("--dataset", choices=sorted(trainable_datasets()))
    p.add_argument("--data-root", type=str, help="dataset folder (see the config comments)")
    p.add_argument("--out-dir", type=str, help="run directory; {arch}/{dataset} are filled in")
    p.add_argument("--epochs", type=int, help="total number of epochs")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument("--momentum", type=float)
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=["step", "cosine"])
    p.add_argument("--milestones", type=int, nargs="*", help="step schedule epochs")
    p.add_argument("--gamma", type=float, help="step schedule factor")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--device", type=str, help="auto | cpu | cuda[:i]")
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        help="channels-last memory format (about 20%% faster on CPU)",
    )
    p.add_argument(
        "--max-epochs-this-run", type=int, help="stop cleanly after N epochs; rerun to resume"
    )
    p.set_defaults(**defaults)
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv`` with defaults from ``--config`` (YAML), command line taking precedence."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    known, _ = pre.parse_known_args(argv)
    with open(known.config) as f:
        defaults = yaml.safe_load(f) or {}
    args = build_parser(defaults).parse_args(argv)
    args.out_dir = Path(str(args.out_dir).format(arch=args.arch, dataset=args.dataset))
    if args.schedule == "step" and not args.milestones:
        args.milestones = []
    return args


def resolved_config(args: argparse.Namespace) -> dict:
    """JSON/YAML-serialisable view of the arguments."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())}


# ----------------------------------------------------------------------------- data
def load_dataset(name: str, root: str | None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Load train and test splits as uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)``."""
    info = dataset_info(name)
    if info.tensors is None:
        raise DatasetNotFoundError(f"dataset {name!r} has no tensor loader for training")
    return info.tensors(root)


# ----------------------------------------------------------------------------- training
def lr_factor(epoch: int, args: argparse.Namespace) -> float:
    """Multiplier of the initial lr during (0-based) ``epoch`` (schedule options of ``args``)."""
    return training.lr_factor(epoch, args.schedule, args.epochs, args.milestones, args.gamma)


# ----------------------------------------------------------------------------- run directory
def git_commit() -> str:
    """Current commit of the repository (with ``-dirty`` if files changed), or ``unknown``."""
    return environment.git_commit(REPO_ROOT) or "unknown"


def record_command(out_dir: Path, argv: list[str], start_epoch: int) -> None:
    """Append this run's command line and environment to ``command.txt``."""
    script = Path(__file__).resolve()
    try:
        script = script.relative_to(Path.cwd())
    except ValueError:
        pass
    command = shlex.join(["python", str(script), *argv])
    lines = [
        f"# {time.strftime('%Y-%m-%d %H:%M:%S')} "
        + ("start" if start_epoch == 0 else f"resume after epoch {start_epoch}"),
        f"command: {command}",
        f"cwd: {os.getcwd()}",
        f"git_commit: {git_commit()}",
        f"torch: {torch.__version__}",
        "",
    ]
    with open(out_dir / "command.txt", "a") as f:
        f.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Train (or resume training) and write the run directory; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    spec = dataset_info(args.dataset)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path = out_dir / "last.pt"

    torch.manual_seed(args.seed)
    model = create_model(
        args.arch, pretrained=False, num_classes=spec.num_classes, in_channels=spec.channels
    ).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=args.lr,
        momentum=args.momentum,
        nesterov=bool(args.nesterov),
        weight_decay=args.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, args))
    generator = torch.Generator().manual_seed(args.seed)
    log: list[dict] = []
    start_epoch = 0

    if last_path.is_file():
        meta = load_checkpoint(model, last_path, map_location=device)
        if (meta["arch"], meta["dataset"]) != (args.arch, args.dataset):
            raise SystemExit(
                f"{last_path} holds {meta['arch']} on {meta['dataset']}, not "
                f"{args.arch} on {args.dataset}: use another --out-dir"
            )
        state = torch.load(last_path, map_location=device, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        generator.set_state(state["rng_data"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"])
        start_epoch = int(state["epoch"])
        log = list(state["log"])
        # The schedule may have changed (e.g. more --epochs): recompute the lr from the args.
        scheduler.base_lrs = [args.lr for _ in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(start_epoch, args)
        logger.info("Resuming %s from epoch %d (%s)", args.arch, start_epoch, last_path)

    record_command(out_dir, argv, start_epoch)
    atomic_write_text(yaml.safe_dump(resolved_config(args)), out_dir / "config.yaml")
    data = load_dataset(args.dataset, args.data_root)
    logger.info(
        "%s on %s: %d params, %d train / %d test images, device %s, %d threads",
        args.arch,
        args.dataset,
        sum(p.numel() for p in model.parameters()),
        len(data["train"][1]),
        len(data["test"][1]),
        device,
        torch.get_num_threads(),
    )

    end_epoch = args.epochs
    if args.max_epochs_this_run is not None:
        end_epoch = min(end_epoch, start_epoch + args.max_epochs_this_run)
    for epoch in range(start_epoch, end_epoch):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = train_one_epoch(
            model,
            optimizer,
            data["train"],
            spec,
            args.batch_size,
            generator,
            device,
            args.channels_last,
        )
        scheduler.step()
        test_loss, test_acc = evaluate_tensors(
            model, data["test"], spec, args.eval_batch_size, device, args.channels_last
        )
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        log.append(record)
        extra = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_data": generator.get_state(),
            "epoch": epoch + 1,
            "log": log,
        }
        if device.type == "cuda":
            extra["rng_cuda"] = torch.cuda.get_rng_state()
        save_checkpoint(model, last_path, extra=extra, arch=args.arch, dataset=args.dataset)
        atomic_write_text("".join(json.dumps(r) + "\n" for r in log), out_dir / "train_log.jsonl")
        logger.info(
            "epoch %d/%d lr %.4f train loss %.4f acc %.4f | test loss %.4f acc %.4f | %.1fs",
            epoch + 1,
            args.epochs,
            lr,
            train_loss,
            train_acc,
            test_loss,
            test_acc,
            record["seconds"],
        )

    completed = log[-1]["epoch"] if log else 0
    if completed < args.epochs:
        logger.info("Stopped after epoch %d of %d; rerun to resume.", completed, args.epochs)
        return 0
    final = log[-1]
    save_checkpoint(
        model,
        out_dir / "model.pt",
        arch=args.arch,
        dataset=args.dataset,
        in_channels=spec.channels,
        num_classes=spec.num_classes,
        mean=list(spec.mean),
        std=list(spec.std),
        epochs=args.epochs,
        test_acc=final["test_acc"],
        test_loss=final["test_loss"],
        seed=args.seed,
        git_commit=git_commit(),
        torch_version=str(torch.__version__),
        config=resolved_config(args),
    )
    logger.info("Done: test accuracy %.4f, weights in %s", final["test_acc"], out_dir / "model.pt")
    return 0


if __name__ == "__main__":
    run_script(main)
