"""Running an extraction script: idempotent reruns, atomic output folders, YAML-backed options.

Shared by ``scripts/imagenet/extract_val.py`` and ``scripts/imagenet/extract_calib.py``: a
completed extraction records its settings in a hidden manifest (:func:`write_manifest`), a rerun
with the same settings is skipped
(:func:`check_existing_output`), the output is built under a temporary name and renamed on
success (:func:`staged_directory`), and the command line takes its defaults from one section of
a YAML file (:func:`parse_section_args`).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from balf.errors import BALFError
from balf.io.atomic import read_json_or_none

__all__ = [
    "MANIFEST_NAME",
    "check_existing_output",
    "parse_section_args",
    "read_manifest",
    "staged_directory",
    "write_manifest",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".balf-extract.json"


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """Settings recorded by a completed extraction into ``folder``, or None if there are none."""
    return read_json_or_none(folder / MANIFEST_NAME)


def write_manifest(folder: Path, settings: dict[str, Any]) -> None:
    """Record the settings of a completed extraction (a hidden file ``ImageFolder`` ignores)."""
    (folder / MANIFEST_NAME).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def check_existing_output(output: Path, settings: dict[str, Any], overwrite: bool) -> bool:
    """Decide whether an extraction into ``output`` can be skipped (idempotent reruns).

    Args:
        output: the folder the extraction writes.
        settings: what defines the result (kind, sample size, seed, ...); compared with the
            manifest a completed run wrote.
        overwrite: rebuild even if ``output`` exists.

    Returns:
        True if ``output`` is the complete result of a run with the same ``settings`` (and
        ``overwrite`` is False), so there is nothing to do; False if it must be (re)built.

    Raises:
        BALFError: if ``output`` exists but was not made with these settings and ``overwrite``
            is False.
    """
    if overwrite or not output.exists():
        return False
    manifest = read_manifest(output)
    if manifest is not None and {key: manifest.get(key) for key in settings} == settings:
        return True
    found = "no manifest" if manifest is None else f"manifest {manifest}"
    raise BALFError(
        f"{output} exists but is not the result of an extraction with settings {settings} "
        f"({found}). Pass --overwrite to rebuild it, or choose another output folder."
    )


@contextmanager
def staged_directory(output: Path) -> Iterator[Path]:
    """Build a folder under a temporary name and move it to ``output`` only on success.

    The staging folder ``<output>.partial`` (same parent, so the rename is atomic) is removed
    first if an interrupted run left one, and removed again if the body raises. An existing
    ``output`` is replaced only after the new folder is complete.

    Args:
        output: final folder path.

    Yields:
        The staging folder to write into.
    """
    staging = output.with_name(output.name + ".partial")
    if staging.exists():
        logger.info("removing %s left by an interrupted run", staging)
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if output.exists():
        previous = output.with_name(output.name + ".old")
        shutil.rmtree(previous, ignore_errors=True)
        output.rename(previous)
        staging.rename(output)
        shutil.rmtree(previous)
    else:
        staging.rename(output)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the script docstring's layout and show each option's default."""


def parse_section_args(
    argv: list[str] | None,
    description: str | None,
    section: str,
    default_config: Path,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    required: Sequence[str],
) -> argparse.Namespace:
    """Command line of an extraction script, with defaults from one section of a YAML file.

    Args:
        section: key of the script's mapping in the YAML file (``--config``).
        add_arguments: adds the script's own options to the parser.
        required: option destinations that must be set (path options, turned into ``Path``).
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=default_config, help="YAML file of defaults")
    known, _ = pre.parse_known_args(argv)
    defaults: dict = {}
    if known.config.is_file():
        defaults = (yaml.safe_load(known.config.read_text()) or {}).get(section, {}) or {}
    elif known.config != default_config:
        pre.error(f"config file not found: {known.config}")
    parser = argparse.ArgumentParser(
        description=description, parents=[pre], formatter_class=_HelpFormatter
    )
    add_arguments(parser)
    unknown = set(defaults) - {action.dest for action in parser._actions}
    if unknown:
        parser.error(f"unknown keys in section {section!r} of {known.config}: {sorted(unknown)}")
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    for name in required:
        if getattr(args, name) is None:
            parser.error(f"--{name.replace('_', '-')} is required (no default in {known.config})")
        setattr(args, name, Path(getattr(args, name)))
    return args
