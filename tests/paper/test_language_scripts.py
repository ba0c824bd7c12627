"""scripts/language/lm_sweep.py end to end on tiny random models and fixture text written in
the real layouts (wiki.test.raw; sts-{train,test}.csv), plus the pieces it is made of."""

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
SCRIPT = ROOT / "scripts" / "language" / "lm_sweep.py"
WORDS = [f"w{i}" for i in range(40)] + ["the", "a", "is", "of", "."]


def test_windows_are_disjoint_and_sized():
    from balf_paper.experiments.language.text_data import split_windows

    ids = torch.arange(1000)
    calib, evaluation = split_windows(ids, 3, 50, 2, 100)
    assert calib.shape == (3, 50) and evaluation.shape == (2, 100)
    assert set(calib.flatten().tolist()).isdisjoint(evaluation.flatten().tolist())
    assert int(calib.min()) >= 500 and int(evaluation.max()) < 500
    with pytest.raises(BALFError, match="too few"):
        split_windows(ids, 20, 50, 2, 100)


def test_spearman_ranks_with_ties():
    from balf_paper.experiments.language.metrics import spearman

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
    from balf_paper.experiments.language.sweep import _params_ratio, energy_threshold_for

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
    return {
        (p.parent.parent.name, p.parent.name, p.stem): json.loads(p.read_text())
        for p in (out / "points").rglob("*.json")
    }


def test_wikitext_sweep_end_to_end_and_resume(wikitext, tmp_path):
    from balf_paper.experiments.language.cli import main

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
        assert np.isfinite(whole["perplexity"]) and np.isfinite(block["perplexity"])
        assert points[("whole", "flops_auto", ratio)]["same_ranks_as"] == "params_auto"
        energy = points[("block", "energy_act_aware", ratio)]
        assert energy["layer_params_ratio"] <= float(ratio) + 1e-9 and 0 < energy["threshold"] <= 1
        assert points[("whole", "uniform", ratio)]["config"]["activation_aware"] is False
        assert whole["provenance"] == "tiny random Llama"
    baseline = json.loads((out / "baseline.json").read_text())
    assert "tokens [0, 64)" in baseline["data"]["evaluation"]
    table = (out / "table.md").read_text()
    assert "block by block" in table and "uncompressed" in table
    assert (out / "figure.png").stat().st_size > 0
    assert (out / "command.txt").read_text().startswith("python scripts/language/lm_sweep.py")
    assert main(argv)["points"] == 0  # resumed: nothing recomputed
    rendered = main(["--task", "wikitext", "--out", str(out), "--render-only"])
    assert str(out / "table.md") in rendered["rendered"]


def test_stsb_sweep_end_to_end(stsb, tmp_path):
    from balf_paper.experiments.language.cli import main

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
        assert -1 <= point["spearman"] <= 1
        assert not any(name.startswith("pooler") for name in point["ranks"])
    assert (
        points[("whole", "params_auto", "0.7000")]["ranks"]
        == points[("block", "params_auto", "0.7000")]["ranks"]
    )


def test_missing_data_stops_with_a_message(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--task", "wikitext", "--data-dir", str(tmp_path / "none"),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "wiki.test.raw not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--task", "nope"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2 and "--task must be one of" in proc.stderr


def test_block_refit_strategy_is_recorded_and_resumed_per_refit(wikitext, tmp_path):
    """``--strategies ... block-refit``: points under points/block-refit/ record the refit; with
    β = 0 and no ridge the perplexity is block by block's; another β recomputes only those."""
    from balf_paper.experiments.language.cli import main

    model_dir, data_dir = wikitext
    out = tmp_path / "out"
    argv = [
        "--task", "wikitext", "--model-dir", str(model_dir), "--gguf-file", "",
        "--data-dir", str(data_dir), "--modes", "params_auto", "--ratios", "0.6",
        "--calib-windows", "4", "--calib-len", "16", "--calib-batch-size", "2",
        "--eval-windows", "2", "--eval-len", "32", "--out", str(out),
        "--strategies", "whole", "block", "block-refit",
    ]  # fmt: skip
    assert main([*argv, "--refit-beta", "0", "--refit-ridge", "0"])["points"] == 3
    points = _points(out)
    block = points[("block", "params_auto", "0.6000")]
    refit = points[("block-refit", "params_auto", "0.6000")]
    assert refit["strategy"] == "block-refit" and "refit" not in block
    assert refit["refit"] == {"type": "AnchoredRefit", "beta": 0.0, "ridge": 0.0,
                              "bias_correction": False, "min_rows_per_input": 1.0}  # fmt: skip
    assert refit["ranks"] == block["ranks"] and refit["refitted_layers"] > 0
    assert refit["perplexity"] == pytest.approx(block["perplexity"], rel=1e-4)
    assert "block by block + refit (β = 0)" in (out / "table.md").read_text()
    assert main([*argv, "--refit-beta", "1"])["points"] == 1  # only the refit's point again
    again = _points(out)[("block-refit", "params_auto", "0.6000")]
    assert again["refit"]["beta"] == 1.0 and again["refit"]["ridge"] == 1e-3
    assert np.isfinite(again["perplexity"])
    assert json.loads((out / "config.json").read_text())["refit_beta"] == 1.0
