"""The two language tasks: a model, its calibration batches, and its evaluation.

* ``wikitext``: a causal LM (default SmolLM2-135M-Instruct, from its Q4_1 GGUF release,
  dequantized to float32), perplexity on the first ``eval_windows`` windows of ``eval_len`` tokens
  of WikiText-2 test; calibration on ``calib_windows`` windows of ``calib_len`` tokens taken from
  the second half of the same token stream (disjoint from the evaluated text).
* ``stsb``: a sentence encoder (default all-MiniLM-L6-v2, fp32), Spearman correlation of the
  cosine similarity of mean-pooled embeddings with the gold scores on STS-B test; calibration on
  the first ``calib_sentences`` sentences of STS-B train (both sentences of each pair, one
  sentence per batch, so no padding token enters the statistics). The encoder's pooler is not
  compressed (mean pooling does not use it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from balf.errors import BALFError
from balf_paper.experiments.tasks.language.lm_eval_tasks import LmEvalScorer, scorer_for
from balf_paper.experiments.tasks.language.metrics import encode_sentences, perplexity, spearman
from balf_paper.experiments.tasks.language.models import load_causal_lm, load_encoder
from balf_paper.experiments.tasks.language.text_data import read_sts, read_wikitext, split_windows

__all__ = ["TASKS", "Task", "build_task"]

TASKS = ("wikitext", "stsb")


@dataclass
class Task:
    """A loaded task.

    Attributes:
        name: ``"wikitext"`` or ``"stsb"``.
        metric: the evaluation's name (``"perplexity"``/``"spearman"``).
        higher_is_better: direction of the metric.
        model: the uncompressed model (eval mode).
        calibration: calibration batches (dicts of tensors for ``forward``).
        forward: ``forward(model, batch)`` for calibration.
        evaluate: ``evaluate(model) -> metric``.
        exclude: module names never compressed.
        provenance: where the weights and data come from (stored with every result).
        data: what the calibration and evaluation sets are (stored with every result).
        extra_scores: more scores of a model, merged into its point (lm-eval's zero-shot
            accuracies, ``--lm-eval-tasks``); ``None``: none.
    """

    name: str
    metric: str
    higher_is_better: bool
    model: nn.Module
    calibration: list[dict]
    forward: Callable[[nn.Module, Any], Any]
    evaluate: Callable[[nn.Module], float]
    exclude: list[str] = field(default_factory=list)
    provenance: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    extra_scores: LmEvalScorer | None = None


def _causal_forward(model: nn.Module, batch: dict) -> Any:
    return model(**batch, use_cache=False)


def _encoder_forward(model: nn.Module, batch: dict) -> Any:
    return model(**batch)


def build_task(args: Any) -> Task:
    """The task named by ``args.task`` with the options of
    :mod:`balf_paper.experiments.cli.language`."""
    torch.manual_seed(args.seed)
    if args.task == "wikitext":
        return _wikitext(args)
    return _stsb(args)


def _wikitext(args: Any) -> Task:
    text = read_wikitext(args.data_dir)
    tokenizer, model = load_causal_lm(args.model_dir, args.gguf_file)
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    calib, evaluation = split_windows(
        ids, args.calib_windows, args.calib_len, args.eval_windows, args.eval_len
    )
    batches = [{"input_ids": b} for b in calib.split(args.calib_batch_size)]
    return Task(
        name="wikitext",
        metric="perplexity",
        higher_is_better=False,
        model=model,
        calibration=batches,
        forward=_causal_forward,
        evaluate=lambda m: perplexity(m, evaluation),
        provenance=args.provenance,
        extra_scores=_lm_eval_scorer(args, tokenizer),
        data={
            "text": "WikiText-2 raw, test split (wiki.test.raw)",
            "tokens": int(ids.numel()),
            "evaluation": f"tokens [0, {evaluation.numel()}): {args.eval_windows} windows of "
            f"{args.eval_len}",
            "calibration": f"tokens [{ids.numel() // 2}, {ids.numel() // 2 + calib.numel()}): "
            f"{args.calib_windows} windows of {args.calib_len}, batches of "
            f"{args.calib_batch_size}",
        },
    )


def _lm_eval_scorer(args: Any, tokenizer: Any) -> LmEvalScorer | None:
    """lm-eval's zero-shot scores of the tasks in ``--lm-eval-tasks`` (``None``: no tasks)."""
    return scorer_for(
        getattr(args, "lm_eval_tasks", None),
        tokenizer,
        include_path=getattr(args, "lm_eval_include_path", None),
        limit=getattr(args, "lm_eval_limit", None),
        batch_size=getattr(args, "lm_eval_batch_size", 8),
    )


def _stsb(args: Any) -> Task:
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

    def evaluate(m: nn.Module) -> float:
        a = encode_sentences(m, tokenizer, test.first)
        b = encode_sentences(m, tokenizer, test.second)
        return spearman(torch.nn.functional.cosine_similarity(a, b).numpy(), gold)

    exclude = [n for n, _ in model.named_modules() if n == "pooler" or n.startswith("pooler.")]
    return Task(
        name="stsb",
        metric="spearman",
        higher_is_better=True,
        model=model,
        calibration=batches,
        forward=_encoder_forward,
        evaluate=evaluate,
        exclude=exclude,
        provenance=args.provenance,
        data={
            "evaluation": f"STS-B test, {len(test.scores)} pairs, cosine of mean-pooled "
            "embeddings vs gold score (Spearman)",
            "calibration": f"STS-B train, first {len(sentences)} sentences (both of each pair), "
            "one sentence per batch",
        },
    )
