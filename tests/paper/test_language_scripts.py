"""The ``language`` experiment (``python -m balf_paper.experiments language``) end to end on tiny
random models and fixture text written in the real layouts (wiki.test.raw;
sts-{train,test}.csv), through the one sweep runner; the converter of the former layout; plus
the pieces it is made of."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from balf.errors import BALFError

ROOT = Path(__file__).resolve().parents[2]
WORDS = [f"w{i}" for i in range(40)] + ["the", "a", "is", "of", "."]


def test_windows_are_disjoint_and_sized():
    from balf_paper.experiments.tasks.language.text_data import split_windows

    ids = torch.arange(1000)
    calib, evaluation = split_windows(ids, 3, 50, 2, 100)
    assert calib.shape == (3, 50) and evaluation.shape == (2, 100)
    assert set(calib.flatten().tolist()).isdisjoint(evaluation.flatten().tolist())
    assert int(calib.min()) >= 500 and int(evaluation.max()) < 500
    with pytest.raises(BALFError, match="too few"):
        split_windows(ids, 20, 50, 2, 100)


def test_spearman_ranks_with_ties():
    from balf_paper.experiments.tasks.language.metrics import spearman

    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a**3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # ties get their average rank: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4)
    r = np.array([1, 2.5, 2.5, 4]) - 2.5
    s = np.array([1, 2, 3, 4]) - 2.5
    expected = (r * s).sum() / np.sqrt((r**2).sum() * (s**2).sum())
    assert spearman(np.array([0.0, 1.0, 1.0, 2.0]), a) == pytest.approx(expected)


def test_energy_threshold_meets_the_parameter_ratio():
    from balf.layers.geometry import LayerGeometry
    from balf.ranks.configs import LayerCandidate
    from balf.ranks.costs import LayerCost
    from balf_paper.experiments.sweep.methods import _params_ratio, energy_threshold_for

    rng = np.random.default_rng(0)
    candidates = []
    for i in range(4):
        e = np.cumsum(np.sort(rng.random(16))[::-1])
        candidates.append(
            LayerCandidate(f"l{i}", LayerCost(LayerGeometry("linear", 1, 16, 32), 1.0), e / e[-1])
        )
    import balf

    for ratio in (0.3, 0.5, 0.7):
        tau = energy_threshold_for(candidates, ratio)
        ranks = balf.EnergyConfig(tau).select_ranks(candidates)[0]
        assert _params_ratio(candidates, ranks) <= ratio
        more = balf.EnergyConfig(min(1.0, tau * (1 + 1e-6) + 1e-9)).select_ranks(candidates)[0]
        assert _params_ratio(candidates, more) > ratio or tau == 1.0


transformers = pytest.importorskip("transformers", reason="transformers is not installed")
from _hf_models import tiny_bert_config, tiny_llama_config  # noqa: E402 (needs transformers)


def _tokenizer(folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]"
    )
    fast.save_pretrained(folder)
    return len(vocab)


def _text(n_words: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(n_words // 12)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def wikitext(tmp_path):
    model_dir, data_dir = tmp_path / "model", tmp_path / "wikitext-2-raw"
    data_dir.mkdir()
    vocab = _tokenizer(model_dir)
    config = tiny_llama_config(
        vocab_size=vocab, max_position_embeddings=128, tie_word_embeddings=True
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(model_dir)
    (data_dir / "wiki.test.raw").write_text(_text(1200, 0))
    return model_dir, data_dir


@pytest.fixture
def stsb(tmp_path):
    model_dir, data_dir = tmp_path / "encoder", tmp_path / "stsbenchmark"
    data_dir.mkdir()
    vocab = _tokenizer(model_dir)
    config = tiny_bert_config(vocab_size=vocab)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(model_dir)
    rng = random.Random(1)
    for split, n in (("train", 12), ("test", 16)):
        rows = []
        for i in range(n):
            a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
            b = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
            rows.append(
                f"main-captions\tMSRvid\t2012test\t{i:04d}\t{rng.uniform(0, 5):.3f}\t{a}\t{b}"
            )
        (data_dir / f"sts-{split}.csv").write_text("\n".join(rows) + "\n")
    return model_dir, data_dir


def _points(out: Path) -> dict:
    """``{(strategy, mode, "0.8000"): stored point}`` of every compressed point under ``out``."""
    points = {}
    for path in out.glob("*/*/results.json"):
        for p in json.loads(path.read_text())["points"]:
            if p["knob"] != "original":
                points[path.parent.parent.name, path.parent.name, f"{p['knob']:.4f}"] = p
    return points


def _main(argv: list[str]) -> dict:
    from balf_paper.experiments.cli.main import main

    return main(["language", *argv])


def test_wikitext_sweep_end_to_end_and_resume(wikitext, tmp_path):
    main = _main
    model_dir, data_dir = wikitext
    out = tmp_path / "out"
    argv = [
        "--task", "wikitext", "--model-dir", str(model_dir), "--gguf-file", "",
        "--data-dir", str(data_dir),
        "--ratios", "0.8", "0.5", "--calib-windows", "4", "--calib-len", "16",
        "--calib-batch-size", "2", "--eval-windows", "2", "--eval-len", "32",
        "--provenance", "tiny random Llama", "--out", str(out),
    ]  # fmt: skip
    result = main(argv)
    points = _points(out)
    # 4 activation-aware modes × 2 strategies + plain SVD once, at 2 ratios
    assert result["points"] == len(points) == 18
    for ratio in ("0.8000", "0.5000"):
        whole, block = (
            points[("whole", "params_auto", ratio)],
            points[("block", "params_auto", ratio)],
        )
        assert whole["ranks"] == block["ranks"]
        assert whole["layer_params_ratio"] <= float(ratio) + 1e-9
        perplexities = whole["metrics"]["perplexity"], block["metrics"]["perplexity"]
        assert np.isfinite(perplexities).all()
        twin = points[("whole", "flops_auto", ratio)]
        assert twin["same_ranks_as"] == "params_auto" and twin["metrics"] == whole["metrics"]
        energy = points[("block", "energy_act_aware", ratio)]
        threshold = energy["method"]["threshold"]  # solved for the ratio
        assert energy["layer_params_ratio"] <= float(ratio) + 1e-9 and 0 < threshold <= 1
        assert points[("whole", "uniform", ratio)]["method"]["activation_aware"] is False
    run = json.loads((out / "whole" / "params_auto" / "results.json").read_text())
    assert run["config"]["weights"] == "tiny random Llama"
    assert run["config"]["task"] == "language-modelling" and run["config"]["strategy"] == "whole"
    assert run["metric"] == {"name": "perplexity", "higher_is_better": False}
    assert "tokens [0, 64)" in run["config"]["evaluation"]["evaluation"]
    assert run["points"][0]["knob"] == "original"  # the uncompressed model, scored once
    table = (out / "table.md").read_text()
    assert "block by block" in table and "uncompressed" in table
    assert (out / "figure.png").stat().st_size > 0
    command = (out / "whole" / "params_auto" / "command.txt").read_text()
    assert command.startswith("python -m balf_paper.experiments language --task wikitext")
    assert main(argv)["points"] == 0  # resumed: nothing recomputed
    rendered = main(["--task", "wikitext", "--out", str(out), "--render-only"])
    assert str(out / "table.md") in rendered["rendered"]


def test_stsb_sweep_end_to_end(stsb, tmp_path):
    main = _main
    model_dir, data_dir = stsb
    out = tmp_path / "out"
    main([
        "--task", "stsb", "--model-dir", str(model_dir), "--data-dir", str(data_dir),
        "--ratios", "0.7", "--modes", "params_auto", "uniform_act_aware",
        "--calib-sentences", "10", "--out", str(out),
    ])  # fmt: skip
    points = _points(out)
    assert set(points) == {
        (s, m, "0.7000") for s in ("whole", "block") for m in ("params_auto", "uniform_act_aware")
    }
    for point in points.values():
        assert -1 <= point["metrics"]["spearman"] <= 1
        assert not any(name.startswith("pooler") for name in point["ranks"])
    assert (
        points[("whole", "params_auto", "0.7000")]["ranks"]
        == points[("block", "params_auto", "0.7000")]["ranks"]
    )


def test_missing_data_stops_with_a_message(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    entry = [sys.executable, "-m", "balf_paper.experiments", "language"]
    proc = subprocess.run(
        [*entry, "--task", "wikitext", "--data-dir", str(tmp_path / "none"),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "wiki.test.raw not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [*entry, "--task", "nope"], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2 and "--task must be one of" in proc.stderr


def _old_layout(out: Path) -> None:
    """A study in the layout of the former lm_sweep.py (one JSON per point, baseline.json)."""
    data = {"evaluation": "tokens [0, 64): 2 windows of 32", "calibration": "c"}
    common = {"task": "wikitext", "provenance": "tiny", "data": data}
    ranks = {"model.layers.0.mlp.up_proj": 3}
    points = {
        ("whole", "params_auto", 0.8): {"config": {"type": "BALFConfig", "ratio": 0.8},
                                        "metric_value": 50.0, "perplexity": 50.0,
                                        "layer_params_ratio": 0.79, "layer_flops_ratio": 0.79,
                                        "model_params_ratio": 0.9, "model_flops_ratio": 0.91,
                                        "ranks": ranks, "timings": {"allocation": 0.1},
                                        "seconds_compress": 2.0, "seconds_evaluate": 3.0},
        ("whole", "flops_auto", 0.8): {"config": {"type": "BALFConfig", "ratio": 0.8},
                                       "metric_value": 50.0, "perplexity": 50.0,
                                       "model_params_ratio": 0.9, "model_flops_ratio": 0.91,
                                       "ranks": ranks, "same_ranks_as": "params_auto",
                                       "seconds_compress": 0.2},
        ("block", "energy_act_aware", 0.8): {"threshold": 0.97,
                                             "config": {"type": "EnergyConfig",
                                                        "threshold": 0.97,
                                                        "activation_aware": True},
                                             "perplexity": 60.0, "model_params_ratio": 0.9,
                                             "model_flops_ratio": 0.9, "ranks": ranks},
        ("block", "energy_act_aware", 0.5): {"skipped": "no energy threshold keeps at most 0.5"},
    }  # fmt: skip
    for (strategy, mode, ratio), point in points.items():
        path = out / "points" / strategy / mode / f"{ratio:.4f}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        base = {**common, "strategy": strategy, "mode": mode, "ratio": ratio}
        path.write_text(json.dumps({**base, **point}))
    (out / "baseline.json").write_text(
        json.dumps({**common, "perplexity": 40.0, "params": 1000, "seconds": 1.5})
    )
    config = {"gguf_file": None, "model_dir": "m", "provenance": "tiny", "calib_windows": 4,
              "ratios": [0.5], "strategies": ["block"], "seed": 0, "out": None}  # fmt: skip
    (out / "config.json").write_text(json.dumps(config))
    (out / "environment.json").write_text(json.dumps({"torch": "x"}))
    (out / "command.txt").write_text("python scripts/language/lm_sweep.py --task wikitext\n")


def test_the_converter_keeps_every_number_and_the_runner_resumes_its_folders(tmp_path):
    from balf_paper.experiments.cli.language import build_parser, language_configs
    from balf_paper.experiments.cli.migrate import main as migrate
    from balf_paper.experiments.render.language import render_language
    from balf_paper.experiments.sweep.store import resume
    from balf_paper.experiments.tasks.base import Metric

    out = tmp_path / "wikitext"
    _old_layout(out)
    written = migrate([str(out), "--delete-old"])
    assert sorted(str(r.relative_to(out)) for r in written) == [
        "block/energy_act_aware", "whole/flops_auto", "whole/params_auto"]  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["block", "whole"]  # the former files gone
    points = _points(out)
    whole = points["whole", "params_auto", "0.8000"]
    assert whole["metrics"] == {"perplexity": 50.0} and whole["params_ratio"] == 0.9
    assert (whole["flops_ratio"], whole["compress_seconds"], whole["eval_seconds"]) == (0.91, 2, 3)
    assert whole["ranks"] == {"model.layers.0.mlp.up_proj": 3} and whole["method"]["ratio"] == 0.8
    assert points["whole", "flops_auto", "0.8000"]["same_ranks_as"] == "params_auto"
    assert points["block", "energy_act_aware", "0.8000"]["method"]["threshold"] == 0.97
    energy = json.loads((out / "block/energy_act_aware/results.json").read_text())
    assert energy["skipped"] == [{"knob": 0.5, "reason": "no energy threshold keeps at most 0.5"}]
    assert energy["points"][0]["metrics"] == {"perplexity": 40.0}  # baseline.json's score
    assert "n/a" in (render_language(out)[0]).read_text()  # the skipped knob
    # the sweep the language experiment builds from the same options resumes the folder
    args = build_parser().parse_args(["--model-dir", "m", "--provenance", "tiny",
                                      "--calib-windows", "4", "--strategies", "block"])  # fmt: skip
    args.task, args.modes = "wikitext", ["energy_act_aware"]
    data = {"evaluation": "tokens [0, 64): 2 windows of 32", "calibration": "c"}
    (_, _, config), = language_configs(args, data)
    resumed = resume(out / "block/energy_act_aware/results.json", config, {}, Metric("perplexity",
                                                                                False))  # fmt: skip
    assert len(resumed["points"]) == 2


def test_the_converter_refuses_an_unknown_key(tmp_path):
    from balf_paper.experiments.cli.migrate import migrate_language

    out = tmp_path / "wikitext"
    _old_layout(out)
    path = out / "points/whole/params_auto/0.8000.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "surprise": 1}))
    with pytest.raises(BALFError, match="unknown key.*surprise"):
        migrate_language(out)


def test_block_refit_and_fisher_sweep(wikitext, tmp_path):
    """``--strategies block-refit`` runs block by block with the anchored refit (β and ridge
    recorded with the sweep), and the first-order sensitivity mode runs under it and whole-model."""
    model_dir, data_dir = wikitext
    out = tmp_path / "out"
    _main([
        "--task", "wikitext", "--model-dir", str(model_dir), "--gguf-file", "",
        "--data-dir", str(data_dir), "--ratios", "0.7", "--calib-windows", "4",
        "--calib-len", "16", "--calib-batch-size", "2", "--eval-windows", "2", "--eval-len", "32",
        "--modes", "params_auto", "params_auto_fisher", "--strategies", "whole", "block-refit",
        "--refit-beta", "0.5", "--probe-samples", "2", "--out", str(out),
    ])  # fmt: skip
    points = _points(out)
    assert set(points) == {(s, m, "0.7000") for s in ("whole", "block-refit")
                           for m in ("params_auto", "params_auto_fisher")}  # fmt: skip
    run = json.loads((out / "block-refit" / "params_auto" / "results.json").read_text())
    assert run["config"]["strategy_options"] == {"beta": 0.5, "ridge": 1e-3}
    for point in points.values():
        assert np.isfinite(point["metrics"]["perplexity"])
        assert point["layer_params_ratio"] <= 0.7 + 1e-9
    fisher = json.loads((out / "whole" / "params_auto_fisher" / "results.json").read_text())
    assert fisher["config"]["objective_options"] == {"probe_samples": 2}


def test_probe_samples_reach_the_objectives_a_selection_measures():
    import balf
    from balf_paper.experiments.sweep.methods import has_objective_options, with_objective_options

    options = {"probe_samples": 3}
    assert has_objective_options("params_auto_selected", options)
    config = with_objective_options(balf.config_for_mode("params_auto_selected", 0.5), options)
    samples = {c.name: getattr(c, "probe_samples", None) for c in config.objective.choices}
    assert samples == {"energy": None, "log_energy": None, "fisher": 3, "damage": 3}
    assert config.objective.samples == 128  # the selection's own scoring samples are its own
