"""Zero-shot scores with lm-evaluation-harness in the language sweep, offline.

A tiny local multiple-choice task (a task YAML over a JSON file written here) scores a tiny
random Llama with a word-level tokenizer built here: lm-eval's accuracy equals the one computed
by hand from the model's log-likelihoods, the model object itself is evaluated (no reload), and
the language experiment writes the scores into every point's metrics (the uncompressed model's
included) and its tables, through the one sweep runner.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest
import torch

from balf.errors import BALFError, DatasetNotFoundError

pytest.importorskip("lm_eval", reason="lm-eval is not installed (the [lm-eval] extra)")
transformers = pytest.importorskip("transformers")
from _hf_models import tiny_llama_config  # noqa: E402 (needs transformers)

from balf_paper.experiments.tasks.language import lm_eval_tasks  # noqa: E402
from balf_paper.experiments.tasks.language.lm_eval_tasks import (  # noqa: E402
    LmEvalOptions,
    evaluate,
    parse_tasks,
)

WORDS = [f"w{i}" for i in range(40)] + ["the", "a", "is", "of", "."]
TASK = "balf_tiny_choice"


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="."
    )


def _docs(n: int = 12, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = WORDS[:40]
    return [
        {
            "question": " ".join(rng.choice(words) for _ in range(rng.randint(3, 6))),
            "choices": [
                " ".join(rng.choice(words) for _ in range(rng.randint(1, 3))) for _ in range(3)
            ],  # fmt: skip
            "answer": rng.randrange(3),
        }
        for _ in range(n)
    ]


def _write_task(folder: Path, docs: list[dict], name: str = TASK, data: Path | None = None) -> Path:
    """A lm-eval task YAML over a local JSON-lines file (``datasets``' json builder, offline)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = data or folder / f"{name}.jsonl"
    if docs:
        data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files: {{test: {json.dumps(str(data))}}}\n"
        f"  cache_dir: {json.dumps(str(folder / 'hf-datasets-cache'))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: answer\n"
        "metric_list:\n"
        "  - {metric: acc, aggregation: mean, higher_is_better: true}\n"
        "  - {metric: acc_norm, aggregation: mean, higher_is_better: true}\n"
    )
    return folder


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _llama(vocab: int):
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(tiny_llama_config(vocab_size=vocab)).eval()


@torch.no_grad()
def _accuracy_by_hand(model, tokenizer, docs) -> tuple[float, float]:
    """acc and acc_norm (log-likelihood per character) of the choices' continuations."""
    hits = hits_norm = 0
    for doc in docs:
        context = tokenizer(doc["question"])["input_ids"]
        lls, norms = [], []
        for choice in doc["choices"]:
            continuation = tokenizer(" " + choice)["input_ids"]
            ids = torch.tensor([context + continuation])
            logprobs = model(ids).logits[0, :-1].log_softmax(-1)
            ll = sum(float(logprobs[len(context) - 1 + i, t]) for i, t in enumerate(continuation))
            lls.append(ll)
            norms.append(ll / len(choice))  # lm-eval: per character of the choice
        hits += max(range(3), key=lls.__getitem__) == doc["answer"]
        hits_norm += max(range(3), key=norms.__getitem__) == doc["answer"]
    return hits / len(docs), hits_norm / len(docs)


def test_lm_eval_scores_the_model_object_as_computed_by_hand(tmp_path):
    tokenizer = _tokenizer()
    model = _llama(len(tokenizer))
    docs = _docs()
    folder = _write_task(tmp_path / "tasks", docs)
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))  # this object is evaluated
    scores = evaluate(model, tokenizer, LmEvalOptions((TASK,), include_path=str(folder)))
    acc, acc_norm = _accuracy_by_hand(model, tokenizer, docs)
    assert calls
    assert scores[TASK]["acc"] == pytest.approx(acc)
    assert scores[TASK]["acc_norm"] == pytest.approx(acc_norm)
    assert 0 < scores[TASK]["acc_stderr"] < 1
    limited = evaluate(model, tokenizer, LmEvalOptions((TASK,), str(folder), limit=4))
    assert limited[TASK]["acc"] == pytest.approx(_accuracy_by_hand(model, tokenizer, docs[:4])[0])


def _wikitext(tmp_path: Path) -> tuple[Path, Path]:
    model_dir, data_dir = tmp_path / "model", tmp_path / "wikitext-2-raw"
    data_dir.mkdir()
    tokenizer = _tokenizer()
    tokenizer.save_pretrained(model_dir)
    _llama(len(tokenizer)).save_pretrained(model_dir)
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(100)]
    (data_dir / "wiki.test.raw").write_text("\n".join(lines) + "\n")
    return model_dir, data_dir


def _points(out: Path) -> dict[tuple[str, str], dict]:
    """``{(strategy, mode): point}`` of the compressed points (one knob per sweep here)."""
    return {(p.parent.parent.name, p.parent.name): json.loads(p.read_text())["points"][1]
            for p in out.glob("*/*/results.json")}  # fmt: skip


def _baselines(out: Path) -> list[dict]:
    return [json.loads(p.read_text())["points"][0] for p in out.glob("*/*/results.json")]


def test_the_sweep_writes_zero_shot_scores_into_points_and_tables(tmp_path):
    from balf_paper.experiments.cli.language import main

    model_dir, data_dir = _wikitext(tmp_path)
    tasks = _write_task(tmp_path / "tasks", _docs())
    _write_task(tasks, _docs(8, seed=1), name="balf_tiny_second")
    out = tmp_path / "out"
    argv = [
        "--task", "wikitext", "--model-dir", str(model_dir), "--gguf-file", "",
        "--data-dir", str(data_dir), "--ratios", "0.6", "--strategies", "whole",
        "--modes", "params_auto", "flops_auto", "uniform",
        "--calib-windows", "4", "--calib-len", "16", "--calib-batch-size", "2",
        "--eval-windows", "2", "--eval-len", "32", "--out", str(out),
    ]  # fmt: skip
    assert main(argv)["points"] == 3  # no lm-eval yet
    with_lm_eval = [*argv, "--lm-eval-tasks", TASK, "--lm-eval-include-path", str(tasks)]
    assert main(with_lm_eval)["points"] == 3  # points without the scores are computed again
    points = _points(out)
    for point in [*_baselines(out), *points.values()]:
        assert 0 <= point["metrics"]["lm_eval"][TASK]["acc"] <= 1
        assert point["metrics"]["perplexity"] > 0  # the task's own metric stays
    flops, params = points[("whole", "flops_auto")], points[("whole", "params_auto")]
    assert flops["same_ranks_as"] == "params_auto"
    assert flops["metrics"]["lm_eval"] == params["metrics"]["lm_eval"]
    table = (out / "table.md").read_text()
    assert f"### lm-eval {TASK}: acc (zero-shot)" in table and "uncompressed" in table
    assert f"lm-eval {TASK.replace('_', chr(92) + '_')}: acc" in (out / "table.tex").read_text()
    assert main(with_lm_eval)["points"] == 0  # resumed: complete points are kept
    both = [*argv, "--lm-eval-tasks", f"{TASK},balf_tiny_second", "--lm-eval-include-path",
            str(tasks)]  # fmt: skip
    assert main(both)["points"] == 3
    assert all(set(p["metrics"]["lm_eval"]) == {TASK, "balf_tiny_second"}
               for p in [*_baselines(out), *_points(out).values()])  # fmt: skip


# -- errors ------------------------------------------------------------------------------------


def test_missing_task_data_names_the_datasets_cache(tmp_path):
    folder = _write_task(tmp_path / "tasks", [], data=tmp_path / "absent.jsonl")
    tokenizer = _tokenizer()
    with pytest.raises(DatasetNotFoundError, match="Hugging Face datasets cache"):
        evaluate(_llama(len(tokenizer)), tokenizer, LmEvalOptions((TASK,), str(folder)))


def test_an_unknown_task_is_refused_by_name():
    class Catalogue:  # lm-eval's TaskManager, without indexing its 15 000 task files
        def __init__(self, include_path=None, include_defaults=True):
            self.all_tasks = ["arc_easy", "piqa"] + (["local"] if include_path else [])

    options = LmEvalOptions(("arc_easy", "nope"))
    with pytest.raises(BALFError, match=r"no task\(s\) \['nope'\]"):
        lm_eval_tasks._task_manager(Catalogue, options)
    assert lm_eval_tasks._task_manager(Catalogue, LmEvalOptions(("piqa",))).all_tasks


def test_lm_eval_not_installed_is_named_with_the_extra(monkeypatch):
    monkeypatch.setattr(lm_eval_tasks.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BALFError, match=r"balf\[lm-eval\]"):
        lm_eval_tasks.scorer_for("arc_easy", tokenizer=None)


def test_lm_eval_tasks_need_a_causal_lm():
    from balf_paper.experiments.tasks.language.task import build_task

    args = argparse.Namespace(task="stsb", seed=0, lm_eval_tasks="arc_easy")
    with pytest.raises(BALFError, match="use it with --task wikitext"):
        build_task(args)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ("", ()),
        ("arc_easy", ("arc_easy",)),
        ("arc_easy, piqa", ("arc_easy", "piqa")),
        (["arc_easy,piqa", "boolq"], ("arc_easy", "piqa", "boolq")),
    ],  # fmt: skip
    ids=["none", "empty", "one", "comma-separated", "list"],
)
def test_task_lists_parse(value, expected):
    assert parse_tasks(value) == expected


@pytest.mark.parametrize("value", ["arc_easy,,piqa", "piqa,piqa"], ids=["empty name", "repeated"])
def test_bad_task_lists_are_refused(value):
    with pytest.raises(BALFError, match="distinct comma-separated"):
        parse_tasks(value)


def test_options_check_themselves(tmp_path):
    with pytest.raises(BALFError, match="at least one task"):
        LmEvalOptions(())
    with pytest.raises(BALFError, match="must be positive"):
        LmEvalOptions(("piqa",), limit=0)
    with pytest.raises(DatasetNotFoundError, match="is not a folder"):
        LmEvalOptions(("piqa",), include_path=str(tmp_path / "absent"))
