"""Zero-shot accuracy with lm-evaluation-harness, on the compressed model in memory.

The language sweep (``--lm-eval-tasks arc_easy,piqa,...``) scores the uncompressed model and
every compressed one with lm-evaluation-harness (``lm-eval``, the ``[lm-eval]`` extra of the
paper package): the model object itself is wrapped in lm-eval's ``HFLM`` (no save and reload),
each task is run zero-shot, and the scores go into the point's JSON under ``"lm_eval"``::

    "lm_eval": {"arc_easy": {"acc": 0.61, "acc_stderr": 0.010, "acc_norm": 0.57, ...}, ...}

and into the sweep's ``table.md``/``table.tex`` (one table per task and metric,
:func:`markdown_tables`, :func:`latex_tables`).

The named tasks (ARC-e/c, HellaSwag, PIQA, WinoGrande, OpenBookQA, BoolQ) read their data with
Hugging Face ``datasets``; offline, they must already be in its cache (``HF_DATASETS_CACHE``,
default ``~/.cache/huggingface/datasets``), else :func:`evaluate` raises
:class:`balf.errors.DatasetNotFoundError` naming the task. Tasks of your own are YAML files in
``include_path`` (lm-eval's task format; a local JSON file works as ``dataset_path: json`` with
``dataset_kwargs: {data_files: ...}``); when every task asked for is there, lm-eval's own
catalogue of about 15 000 tasks is not indexed (that takes tens of seconds).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from balf.errors import BALFError, DatasetNotFoundError

__all__ = [
    "POINT_KEY",
    "LmEvalOptions",
    "LmEvalScorer",
    "evaluate",
    "latex_tables",
    "markdown_tables",
    "parse_tasks",
]

log = logging.getLogger(__name__)

POINT_KEY = "lm_eval"
"""Key of a point's (or the baseline's) lm-eval scores: ``{task: {metric: value}}``."""
_INSTALL = "pip install 'balf[lm-eval]' (lm-eval with its [hf] extra)"
_TABLE_METRICS = ("acc", "acc_norm")  # shown in the tables when a task reports them


def parse_tasks(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Task names from ``"arc_easy,piqa"`` or ``["arc_easy", "piqa"]`` (empty: none).

    Raises:
        BALFError: a name is empty (e.g. ``"arc_easy,,piqa"``) or repeated.
    """
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else [p for v in value for p in v.split(",")]
    names = tuple(p.strip() for p in parts)
    if names == ("",):
        return ()
    if any(not n for n in names) or len(set(names)) != len(names):
        raise BALFError(
            f"--lm-eval-tasks must be distinct comma-separated task names, got {value!r}"
        )
    return names


@dataclass(frozen=True)
class LmEvalOptions:
    """What to run with lm-eval.

    Args:
        tasks: lm-eval task names (``("arc_easy", "piqa")``).
        include_path: a folder of task YAML files of your own (``None``: lm-eval's tasks only).
        limit: at most this many examples per task (a float in (0, 1): this fraction);
            ``None``: all. Scores on a limit are for testing, not for reporting.
        batch_size: sequences per forward pass.
        num_fewshot: examples in the prompt (0: zero-shot, as compressed models are judged).
    """

    tasks: tuple[str, ...]
    include_path: str | None = None
    limit: int | float | None = None
    batch_size: int = 8
    num_fewshot: int = 0

    def __post_init__(self) -> None:
        if not self.tasks:
            raise BALFError("LmEvalOptions needs at least one task (e.g. tasks=('arc_easy',))")
        if self.limit is not None and not (self.limit > 0):
            raise BALFError(f"--lm-eval-limit must be positive, got {self.limit}")
        if self.batch_size < 1 or self.num_fewshot < 0:
            raise BALFError(
                f"--lm-eval-batch-size must be >= 1 and num_fewshot >= 0, got "
                f"{self.batch_size} and {self.num_fewshot}"
            )
        if self.include_path is not None and not Path(self.include_path).is_dir():
            raise DatasetNotFoundError(
                f"--lm-eval-include-path {self.include_path} is not a folder (of task YAML files)"
            )


def _require_lm_eval():
    if importlib.util.find_spec("lm_eval") is None:
        raise BALFError(f"--lm-eval-tasks needs lm-evaluation-harness: {_INSTALL}")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    return lm_eval, HFLM, TaskManager


def _task_manager(task_manager_cls, options: LmEvalOptions):
    """lm-eval's task index: only ``include_path`` when it holds every task asked for."""
    if options.include_path is not None:
        local = task_manager_cls(include_path=options.include_path, include_defaults=False)
        if set(options.tasks) <= set(local.all_tasks):
            return local
    manager = task_manager_cls(include_path=options.include_path)
    unknown = sorted(set(options.tasks) - set(manager.all_tasks))
    if unknown:
        raise BALFError(
            f"lm-eval has no task(s) {unknown}; names as `lm_eval --tasks list` prints them "
            "(e.g. arc_easy, arc_challenge, hellaswag, piqa, winogrande, openbookqa, boolq), or "
            "YAML files of your own in --lm-eval-include-path"
        )
    return manager


def _is_missing_data(exc: BaseException) -> bool:
    """A data set lm-eval could not read offline (not in the datasets cache)."""
    names = {type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    return bool(names & {"ConnectionError", "OfflineModeIsEnabled", "DatasetNotFoundError",
                         "LocalEntryNotFoundError", "FileNotFoundError"})  # fmt: skip


def _scores(results: Mapping[str, Any], tasks: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` from lm-eval's ``results["results"]`` (``"acc,none"`` keys;
    the filter is kept in the name only when it is not ``none``; non-numbers dropped)."""
    out: dict[str, dict[str, float]] = {}
    for task in tasks:
        entry = results["results"].get(task, {})
        scores = {}
        for key, value in entry.items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            metric, _, filter_name = key.partition(",")
            scores[metric if filter_name == "none" else f"{metric},{filter_name}"] = float(value)
        out[task] = scores
    return out


def evaluate(model: nn.Module, tokenizer: Any, options: LmEvalOptions) -> dict[str, dict]:
    """Score a causal LM in memory on lm-eval tasks.

    Args:
        model: a ``transformers`` causal LM (compressed or not), used as it is (its device).
        tokenizer: its tokenizer.
        options: the tasks and how to run them.

    Returns:
        ``{task: {metric: value}}``, e.g. ``{"arc_easy": {"acc": 0.61, "acc_stderr": 0.01,
        "acc_norm": 0.57, "acc_norm_stderr": 0.01}}``.

    Raises:
        BALFError: lm-eval is not installed, or a task is unknown.
        DatasetNotFoundError: a task's data set is not available offline (not in the Hugging
            Face datasets cache).

    Example:
        >>> small, _ = balf.compress(model, batches, balf.BALFConfig(0.6))
        >>> evaluate(small, tokenizer, LmEvalOptions(("arc_easy",), limit=100))["arc_easy"]["acc"]
        0.55
    """
    lm_eval, hflm_cls, task_manager_cls = _require_lm_eval()
    manager = _task_manager(task_manager_cls, options)
    was_training = model.training
    lm = hflm_cls(pretrained=model.eval(), tokenizer=tokenizer, batch_size=options.batch_size)
    try:
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(options.tasks),
            task_manager=manager,
            num_fewshot=options.num_fewshot,
            limit=options.limit,
            log_samples=False,
            verbosity="WARNING",
        )
    except Exception as exc:
        if _is_missing_data(exc):
            raise DatasetNotFoundError(
                f"lm-eval could not read the data of {list(options.tasks)} ({type(exc).__name__}: "
                f"{exc}); the named tasks need their data sets in the Hugging Face datasets cache "
                "(HF_DATASETS_CACHE): run them once with network access, or copy the cache here"
            ) from exc
        raise
    finally:
        model.train(was_training)
    return _scores(results, options.tasks)


class LmEvalScorer:
    """The sweep's hook: ``scorer(model)`` gives ``{"lm_eval": scores}`` for a point's JSON;
    ``scorer.complete(point)`` says whether a stored point already has every task's scores."""

    def __init__(self, tokenizer: Any, options: LmEvalOptions) -> None:
        self.tokenizer, self.options = tokenizer, options

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        return {POINT_KEY: evaluate(model, self.tokenizer, self.options)}

    def complete(self, point: Mapping[str, Any] | None) -> bool:
        """A point is complete when it was skipped or holds scores of every task asked for."""
        if point is None:
            return False
        return "skipped" in point or set(self.options.tasks) <= set(point.get(POINT_KEY, {}))


def scorer_for(tasks: str | Sequence[str] | None, tokenizer: Any, **options: Any) -> (
        LmEvalScorer | None):  # fmt: skip
    """An :class:`LmEvalScorer` for the tasks named (``None`` when none are)."""
    names = parse_tasks(tasks)
    if not names:
        return None
    _require_lm_eval()  # fail before any compression when lm-eval is missing
    return LmEvalScorer(tokenizer, LmEvalOptions(names, **options))


# -- tables ----------------------------------------------------------------------------------


def _columns(points: Sequence[Mapping[str, Any]], baseline: Mapping[str, Any]) -> list[tuple]:
    """``(task, metric)`` pairs to tabulate, in task order of first appearance."""
    found: dict[tuple[str, str], None] = {}
    for source in [baseline, *points]:
        for task, scores in (source.get(POINT_KEY) or {}).items():
            for metric in _TABLE_METRICS:
                if metric in scores:
                    found[(task, metric)] = None
    return list(found)


def _value(point: Mapping[str, Any] | None, task: str, metric: str) -> str:
    if point is None:
        return "—"
    if "skipped" in point:
        return "n/a"
    value = (point.get(POINT_KEY) or {}).get(task, {}).get(metric)
    return "—" if value is None or math.isnan(value) else f"{value:.4f}"


def _rows(
    points, baseline, ratios, keys, cells, row_label: Callable[[str, str], list[str]]
) -> list[tuple[str, str, list[list[str]]]]:
    """``(task, metric, rows)`` with each row ``[*row_label(mode, strategy), *values]``."""
    out = []
    for task, metric in _columns(points, baseline):
        rows = [
            [
                *row_label(mode, strategy),
                *(_value(cells.get((mode, strategy, r)), task, metric) for r in ratios),
            ]  # fmt: skip
            for mode, strategy in keys
        ]
        if (baseline.get(POINT_KEY) or {}).get(task, {}).get(metric) is not None:
            rows.append(["uncompressed", "—", _value(baseline, task, metric)]
                        + [""] * (len(ratios) - 1))  # fmt: skip
        out.append((task, metric, rows))
    return out


def markdown_tables(points, baseline, ratios, keys, cells, row_label) -> str:
    """The lm-eval scores as Markdown tables (one per task and metric; empty: no scores).

    Args:
        points: the sweep's stored points; ``baseline``: its ``baseline.json``.
        ratios, keys, cells: the main table's columns, ``(mode, strategy)`` rows and
            ``{(mode, strategy, ratio): point}`` (:func:`balf_paper.experiments.render.language`).
        row_label: ``(mode, strategy) -> [mode label, calibration label]``.
    """
    blocks = []
    for task, metric, rows in _rows(points, baseline, ratios, keys, cells, row_label):
        head = "| mode | calibration | " + " | ".join(f"{r:g}" for r in ratios) + " |"
        lines = [f"### lm-eval {task}: {metric} (zero-shot)", "", head,
                 "|---|---|" + "--:|" * len(ratios)]  # fmt: skip
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def latex_tables(points, baseline, ratios, keys, cells, row_label) -> str:
    """The same tables as :func:`markdown_tables`, as LaTeX ``tabular`` blocks."""
    blocks = []
    for task, metric, rows in _rows(points, baseline, ratios, keys, cells, row_label):
        body = [" & ".join(["mode", "calibration", *[f"{r:g}" for r in ratios]]) + r" \\"]
        body += [" & ".join(row) + r" \\" for row in rows]
        task_tex = task.replace("_", r"\_")
        metric_tex = metric.replace("_", r"\_")
        blocks.append(
            f"% lm-eval {task}: {metric} (zero-shot)\n"
            f"\\begin{{tabular}}{{ll{'r' * len(ratios)}}}\n"
            f"\\multicolumn{{{2 + len(ratios)}}}{{l}}{{lm-eval {task_tex}: {metric_tex}}} \\\\\n"
            + "\n".join(body) + "\n\\end{tabular}"
        )  # fmt: skip
    return "\n\n".join(blocks)
