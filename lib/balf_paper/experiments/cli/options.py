"""Command-line options shared by the experiment scripts: YAML defaults and process settings.

Every script is argparse with ``--help``; defaults come from a YAML file in ``configs/``
(``--config``) and any option overrides them. A config named without a folder is looked up in
``./configs/`` and in the ``configs/`` folder of the checkout holding the running script
(see :func:`find_config`); the library itself ships no experiment defaults.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from balf.calibration.distributed import init_from_environment
from balf.errors import BALFError, DatasetNotFoundError, WeightsNotFoundError
from balf_paper import package_file

__all__ = [
    "add_common_arguments",
    "add_corruption_arguments",
    "check_out_root",
    "configure_process",
    "find_config",
    "add_method_arguments",
    "is_dataset_option",
    "non_negative_int",
    "is_option",
    "parse_with_yaml",
    "pop_dataset",
    "pop_option",
    "read_config",
    "recorded_argv",
    "run_script",
]

log = logging.getLogger(__name__)


def find_config(name: str | Path) -> Path | None:
    """The YAML file ``name``: as given, else ``configs/<name>`` in the working directory or
    beside the running script (in it or up to three folders above), else the copy shipped with
    the package (``balf_paper/configs/``); ``None`` if absent."""
    path = Path(name)
    if path.is_file() or path.is_absolute():
        return path if path.is_file() else None
    folders = [Path.cwd()]
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.is_file():
        folders += list(script.resolve().parents)[:4]
    for folder in folders:
        candidate = folder / "configs" / path.name
        if candidate.is_file():
            return candidate
    shipped = package_file("configs") / path.name
    return shipped if shipped.is_file() else None


class _DefaultsHelpFormatter(argparse.HelpFormatter):
    """Shows every option's default (after the YAML's are applied) unless its help names one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if isinstance(action, argparse._StoreTrueAction) and action.default is False:
            return text
        return f"{text} (default: %(default)s)".strip()


def run_script(main: Callable[[], Any]) -> None:
    """Run a script's ``main()`` and exit with its code.

    An ``int`` returned by ``main()`` is the exit status; any other return value (a results dict,
    ``None``) means success, exit status 0.

    A missing input (dataset, checkpoint, weights) or an invalid value ends the script with the
    library's message alone on stderr and exit status 2, like an argparse error, not a traceback.
    """
    try:
        code = main()
    except (BALFError, DatasetNotFoundError, WeightsNotFoundError) as exc:
        prog = Path(sys.argv[0]).name or "balf"
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def is_option(arg: str, option: str = "--dataset") -> bool:
    """Whether a command-line word is ``option`` or ``option=VALUE``."""
    return arg == option or arg.startswith(option + "=")


def is_dataset_option(arg: str) -> bool:
    """Whether a command-line word is ``--dataset`` or ``--dataset=NAME``."""
    return is_option(arg, "--dataset")


def recorded_argv(
    argv: Sequence[str] | None, value: str, option: str = "--dataset"
) -> list[str]:
    """``argv`` (default ``sys.argv[1:]``) with ``option value`` put back, for ``command.txt``.

    :func:`pop_option` takes ``--dataset`` (``--task``) out before the options are parsed; the
    recorded command must still name it, or rerunning it would run the default.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if any(is_option(a, option) for a in args):
        return args
    return [option, value, *args]


def pop_option(
    argv: Sequence[str] | None, option: str, choices: Sequence[str], default: str
) -> tuple[str, list[str]]:
    """Take every ``option NAME`` (or ``option=NAME``) out of ``argv``; the last one counts,
    as with any option (a wrapper's ``--dataset cifar10`` is overridden by a later
    ``--dataset cifar10-jpeg``).

    Lets one entry point serve several datasets (tasks), each with its own
    ``configs/<dataset>_*.yaml`` defaults.

    Returns:
        ``(value, remaining argv)``.

    Raises:
        BALFError: for a value outside ``choices`` or a missing value.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    value, rest, i = default, [], 0
    while i < len(words):
        arg = words[i]
        if is_option(arg, option):
            inline = "=" in arg
            following = words[i + 1] if i + 1 < len(words) else ""
            value = arg.partition("=")[2] if inline else following
            i += 1 if inline else 2
            continue
        rest.append(arg)
        i += 1
    if value not in choices:
        raise BALFError(f"{option} must be one of {', '.join(choices)}, got {value!r}")
    return value, rest


def pop_dataset(
    argv: Sequence[str] | None, choices: Sequence[str], default: str
) -> tuple[str, list[str]]:
    """:func:`pop_option` of ``--dataset``."""
    return pop_option(argv, "--dataset", choices, default)


def parse_with_yaml(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, default_config: str | None
) -> argparse.Namespace:
    """Parse ``argv`` with defaults taken from ``--config`` (a YAML mapping of option names).

    YAML keys use the options' names with ``-`` or ``_``; each value is checked and converted
    as the option's command-line value would be. A file may ``extends: <base>.yaml``: a variant
    lists only what differs (:func:`read_config`). ``--out-root``, when the parser has it, must
    be a folder or creatable.

    Raises:
        BALFError: the YAML file is invalid, has an unknown option or a value of the wrong
            kind (a scalar for a list option, ...), or ``--out-root`` is a file or a dangling
            symbolic link (each named; scripts exit with status 2, see :func:`run_script`).
    """
    parser.add_argument(
        "--config",
        default=default_config,
        help="YAML file with defaults for these options (default: %(default)s)",
    )
    # --config is read first on its own, so that --help shows the YAML's defaults
    pre_parser = argparse.ArgumentParser(add_help=False)
    pre_parser.add_argument("--config", default=default_config)
    pre, _ = pre_parser.parse_known_args(argv)
    if pre.config:
        path = find_config(pre.config)
        if path is None and pre.config != default_config:
            raise BALFError(f"config file {pre.config} not found (nor in a configs/ folder)")
        if path is None:
            log.warning("%s not found; using the built-in defaults", default_config)
        else:
            parser.set_defaults(**_yaml_defaults(path, parser._actions))
            parser.epilog = (parser.epilog + "\n" if parser.epilog else "") + (
                f"Defaults shown are those of {path} (command-line options override them)."
            )
    parser.formatter_class = _DefaultsHelpFormatter
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else None  # recorded in each run's command.txt
    if getattr(args, "out_root", None) is not None:
        check_out_root(args.out_root)
    return args


EXTENDS = "extends"
"""The YAML key naming the config file a variant extends (its keys override the base's)."""


def _load_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a YAML config file (an empty file: ``{}``)."""
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise BALFError(f"{path} is not valid YAML ({exc}); fix the file") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise BALFError(
            f"{path} holds a YAML {type(values).__name__}, not a mapping of option names to "
            "values (e.g. 'calib-size: 1024')"
        )
    return values


def read_config(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, tuple[Path, str, Any]]:
    """``{option dest: (file, key as written, value)}`` of a YAML config, over those of the
    file it ``extends`` (looked up beside it, then as :func:`find_config` finds names),
    recursively; ``file`` is the one that sets the value.

    Raises:
        BALFError: a file is not a YAML mapping, the base is not found, or the chain of
            ``extends`` loops.
    """
    path = Path(path)
    values = _load_yaml(path)
    own = {str(k).replace("-", "_"): (path, str(k), v) for k, v in values.items() if k != EXTENDS}
    base_name = values.get(EXTENDS)
    if base_name is None:
        return own
    beside = path.parent / str(base_name)
    base = beside if beside.is_file() else find_config(str(base_name))
    if base is None:
        raise BALFError(f"{path}: extends {base_name}, which is not found")
    chain = (*_seen, path.resolve())
    if base.resolve() in chain:
        names = " -> ".join(p.name for p in (*chain, base))
        raise BALFError(f"{path}: 'extends' loops ({names})")
    return {**read_config(base, chain), **own}


def _yaml_defaults(path: Path, actions: Sequence[argparse.Action]) -> dict[str, Any]:
    """The YAML file's values (and its bases') as parser defaults, each checked and converted
    as the option's command-line value would be (a list for ``nargs="+"`` options, the
    option's ``type``)."""
    by_dest = {a.dest: a for a in actions}
    defaults = {}
    for dest, (source, key, value) in read_config(path).items():
        if dest not in by_dest:
            raise BALFError(f"{source}: unknown option {key!r}")
        defaults[dest] = _yaml_value(source, key, value, by_dest[dest])
    return defaults

def _yaml_value(path: Path, key: str, value: Any, action: argparse.Action) -> Any:
    """``value`` as ``action`` would store it from the command line, or a BALFError naming the
    file, the option, what it expects and what it got."""
    option = f"{path}: option {key!r}"
    if value is None or action.nargs == 0:  # store_true/false/const, --x/--no-x switches
        if value is not None and not isinstance(value, bool):
            raise BALFError(f"{option} is a switch: write true or false, not {value!r}")
        return value
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        if not isinstance(value, list):
            raise BALFError(
                f"{option} takes a list, got the {type(value).__name__} {value!r} "
                f"(write {key}: [{value}])"
            )
        if action.nargs == "+" and not value:
            raise BALFError(f"{option} takes at least one value, got an empty list")
        return [_converted(option, v, action) for v in value]
    if isinstance(value, list | dict):
        raise BALFError(f"{option} takes one value, got the {type(value).__name__} {value!r}")
    return _converted(option, value, action)


def _converted(option: str, value: Any, action: argparse.Action) -> Any:
    if isinstance(value, list | dict):
        raise BALFError(f"{option}: each value is a single value, got {value!r}")
    if isinstance(value, bool) and action.type is not None:
        raise BALFError(f"{option}: invalid value {value!r} (a number or a name, not a switch)")
    try:  # as argparse does: the option's type applied to the text
        value = (action.type or str)(str(value))
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise BALFError(f"{option}: invalid value {value!r} ({exc})") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise BALFError(f"{option}: invalid choice {value!r} (choose from {choices})")
    return value


def check_out_root(out_root: str | Path) -> None:
    """The results folder exists as a folder, or can be created (not a file, not a link to
    nowhere).

    Raises:
        BALFError: naming the path and the fix.
    """
    path = Path(out_root)
    if path.is_symlink() and not path.exists():
        raise BALFError(
            f"--out-root {path} is a symbolic link to {os.readlink(path)}, which does not "
            "exist: create its target or pass another folder"
        )
    if path.exists() and not path.is_dir():
        raise BALFError(f"--out-root {path} is a file, not a folder: pass a folder")
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise BALFError(f"--out-root {path} cannot be created: {parent} is not a folder")
            break


def non_negative_int(text: str) -> int:
    """An argparse ``type``: a seed or count, ``0`` or more."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def configure_process(args: argparse.Namespace) -> None:
    """Process-wide settings of an experiment entry point (never done by library classes):
    INFO logging, ``--threads`` CPU threads, and the torchrun process group (``args.device``
    becomes this process's device)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = init_from_environment(args.device)  # torchrun: one process per device


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every sweep script shares."""
    g = parser.add_argument_group("common")
    g.add_argument("--model", default="resnet20", help="model name (default: %(default)s)")
    g.add_argument("--data-root", default="datasets", help="dataset folder")
    g.add_argument(
        "--checkpoint",
        default=None,
        help="weights of a CIFAR/Fashion-MNIST model (default: results/<dataset>/"
        "checkpoints/<model>/model.pt)",
    )
    g.add_argument(
        "--random-weights",
        action="store_true",
        help="use untrained weights (fixtures and benchmarks only)",
    )
    g.add_argument("--calib-size", type=int, default=1024, help="calibration images")
    g.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of calibration/evaluation subsets"
    )
    g.add_argument(
        "--seeds",
        nargs="+",
        type=non_negative_int,
        default=None,
        metavar="S",
        help="run once per seed, each drawing its own calibration subset (evaluation subset: "
        "that of --seed); seed 0 in the run folder, seed k in <run folder>/seed<k>/ "
        "(default: --seed only)",
    )
    g.add_argument(
        "--eval-size",
        type=int,
        default=None,
        help="evaluate on a seeded subset of this size (default: full set)",
    )
    g.add_argument("--batch-size", type=int, default=128, help="calibration/evaluation batch")
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    g.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device"
    )
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--out-root", default="results", help="results folder")
    g.add_argument(
        "--cache-root", default=".", help="folder of activation-cache/ and factorization-cache/"
    )
    g.add_argument("--no-cache", action="store_true", help="do not cache statistics")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g.add_argument(
        "--save-model",
        default=None,
        metavar="DIR",
        help="save each newly computed compressed point with balf.save to DIR/<run folder>/"
        "<knob>.safetensors (BALF and baseline modes; reload with balf.load)",
    )
    g.add_argument(
        "--save-knobs",
        nargs="+",
        type=float,
        default=None,
        metavar="K",
        help="with --save-model: save only these knob values (default: every point)",
    )
    g.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="compute at most this many new points per sweep, then stop",
    )
    add_method_arguments(parser)


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.replace("-", "_"), yaml.safe_load(value)


def add_method_arguments(parser: argparse.ArgumentParser, strategy: bool = True) -> None:
    """``--method-option KEY=VALUE`` (repeatable: further fields of the mode's config, passed
    through; VALUE is read as YAML) and, with ``strategy``, ``--strategy`` (the calibration
    strategy, one of the registered ones)."""
    from balf_paper.experiments.sweep.methods import registered_strategies

    g = parser.add_argument_group("method")
    g.add_argument(
        "--method-option", dest="method_options", type=_key_value, action="append", default=None,
        metavar="KEY=VALUE", help="a further field of the mode's config, e.g. rank_multiple=8",
    )  # fmt: skip
    if strategy:
        strategies = registered_strategies()
        g.add_argument(
            "--strategy", default="whole", choices=strategies,
            help="calibration strategy: whole-model statistics, or block by block",
        )  # fmt: skip


def add_corruption_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """Options of the scripts that build a corrupted test set (CIFAR-10-C layout) into ``out``."""
    from balf_paper.data import CORRUPTIONS

    parser.add_argument("--out", default=out, help="output folder")
    parser.add_argument(
        "--subset",
        type=int,
        default=None,
        help="corrupt a seeded subset of this many test images (default: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset and corruptions")
    parser.add_argument(
        "--corruptions",
        nargs="+",
        default=list(CORRUPTIONS),
        choices=list(CORRUPTIONS),
        metavar="NAME",
        help="corruptions to write (default: all 15)",
    )
    parser.add_argument("--overwrite", action="store_true", help="rebuild a mismatching folder")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def corrupt_with_arguments(
    args: argparse.Namespace, images: Any, labels: Any, settings: dict[str, Any]
) -> dict[str, Any]:
    """Run ``corrupt_test_set`` with the options of :func:`add_corruption_arguments`.

    ``images``: uint8 ``(N, H, W)`` or ``(N, H, W, 3)``; ``labels``: ``(N,)``; ``settings``: what
    the script records about its source (format, padding, ...). Logs at INFO level.
    """
    from balf_paper.data.corruptions import corrupt_test_set

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return corrupt_test_set(
        Path(args.out),
        images,
        labels,
        corruptions=args.corruptions,
        seed=args.seed,
        subset=args.subset,
        settings=settings,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
