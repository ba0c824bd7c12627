"""The one sweep runner on any task: what it promises, on tiny synthetic tasks.

- A task's evaluation must report the task's metric; extra metrics join each point's
  ``metrics`` (a clash is an error); the results file records the metric and its direction.
- Modes come from the registry: a mode registered by a user runs with its own config fields
  passed through (``method_options``), and the command line offers it.
- Knob after knob across sweeps; the uncompressed model scored once per evaluation; a model
  identical to one already scored (same ranks and factorization) reuses its scores.
- A format-1 results file is resumed without recomputing and rewritten in format 2, losslessly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import balf
from balf.errors import BALFError
from balf.ranks.configs import CompressionConfig
from balf.ranks.modes import Mode, register_modes, registered_modes
from balf_paper.experiments.sweep.config import SweepConfig
from balf_paper.experiments.sweep.points import ResultPoint
from balf_paper.experiments.sweep.runner import DenseEvaluations, Runner, RunOptions
from balf_paper.experiments.tasks.base import Scores, Task, task_kind


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def _task(evaluate=None, kind="language-modelling", **kw) -> Task:
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(1))
    model = _model()

    def perplexity(m: nn.Module) -> Scores:  # any score with the kind's name will do
        with torch.no_grad():
            return Scores({"perplexity": float(m(x).pow(2).mean().exp())}, samples=len(x))

    return Task(kind, model, evaluate or perplexity, x[:1], calibration=[x], **kw)


def _config(mode: str, knobs, **kw) -> SweepConfig:
    return SweepConfig("toy", "mlp", mode, list(knobs), calib_size=32, task="language-modelling",
                       **kw)  # fmt: skip


def _results(path):
    return json.loads((path / "results.json").read_text())


def test_the_kinds_name_their_metric_and_its_direction():
    assert (task_kind("image-classification").metric.name, task_kind("language-modelling")
            .metric.higher_is_better) == ("accuracy", False)  # fmt: skip
    assert task_kind("sentence-similarity").metric.better(0.8, 0.7)
    with pytest.raises(BALFError, match="unknown task 'vision'"):
        _config("flops_auto", [0.5]).__class__("d", "m", "flops_auto", [0.5], 1, task="vision")


def test_extra_metrics_join_every_point_and_a_clash_is_an_error(tmp_path):
    task = _task(extra_metrics=[lambda m: {"zero_shot": {"piqa": 0.6}}])
    results = Runner(task, RunOptions(progress=False)).sweep(
        _config("params_auto", [0.5]), tmp_path / "run"
    )
    assert results["metric"] == {"name": "perplexity", "higher_is_better": False}
    for point in results["points"]:
        assert set(point["metrics"]) == {"perplexity", "zero_shot"}
    clash = _task(extra_metrics=[lambda m: {"perplexity": 1.0}])
    with pytest.raises(BALFError, match="repeat names"):
        clash.score(clash.model)
    silent = _task(evaluate=lambda m: Scores({"loss": 1.0}))
    with pytest.raises(BALFError, match="must report 'perplexity'"):
        silent.score(silent.model)


@register_modes(Mode("toy_half_rank", {"activation_aware": True}))
@dataclass(frozen=True)
class _HalfRank(CompressionConfig):
    """A user's rank rule: ``ratio`` of every layer's full rank, at least ``floor``."""

    ratio: float = 0.5
    activation_aware: bool = True
    floor: int = 1

    def select_ranks(self, candidates):
        ranks = [max(self.floor, int(self.ratio * c.cost.geometry.max_rank)) for c in candidates]
        return ranks, None


def test_a_registered_mode_runs_with_its_own_fields_passed_through(tmp_path):
    config = _config("toy_half_rank", [0.25], method_options={"floor": 3})
    point = Runner(_task(), RunOptions(progress=False)).sweep(config, tmp_path / "r")["points"][1]
    assert point["method"] == {"type": "_HalfRank", "ratio": 0.25, "activation_aware": True,
                               "floor": 3}  # fmt: skip
    assert min(point["ranks"].values()) == 3
    with pytest.raises(BALFError, match=r"method option\(s\) \['flor'\] not accepted.*'floor'"):
        _config("toy_half_rank", [0.25], method_options={"flor": 3})
    from balf_paper.experiments.cli.language import build_parser

    modes = next(a for a in build_parser()._actions if a.dest == "modes")
    assert set(modes.choices) == set(registered_modes()) and "toy_half_rank" in modes.choices


def test_sweeps_run_knob_after_knob_and_share_the_dense_evaluation(tmp_path, monkeypatch):
    seen = []
    real = Runner.compressed_point

    def spy(self, config, knob, small, fields):
        seen.append((config.mode, knob))
        return real(self, config, knob, small, fields)

    monkeypatch.setattr(Runner, "compressed_point", spy)
    dense = DenseEvaluations()
    task = _task(evaluation_id="toy-eval")
    planned = [(_config(m, [0.8, 0.5]), tmp_path / m, None) for m in ("params_auto", "uniform")]
    Runner(task, RunOptions(progress=False), dense).sweeps(planned, knob_major=True)
    assert seen == [("params_auto", 0.8), ("uniform", 0.8), ("params_auto", 0.5),
                    ("uniform", 0.5)]  # fmt: skip
    # another runner of the same evaluation (e.g. another seed) reuses the uncompressed point
    other = _task(evaluation_id="toy-eval")
    score = other.evaluate

    def never_the_original(m):
        assert m is not other.model, "the uncompressed model was scored again"
        return score(m)

    other.evaluate = never_the_original
    Runner(other, RunOptions(progress=False), dense).sweep(
        _config("params_auto", [0.8]), tmp_path / "again"
    )
    assert _results(tmp_path / "again")["points"][0] == _results(tmp_path / "params_auto")[
        "points"][0]  # fmt: skip


def test_an_identical_model_is_scored_once(tmp_path):
    scored = []

    def counting(m):
        scored.append(1)
        return Scores({"perplexity": 1.0 + len(scored)})

    runner = Runner(_task(evaluate=counting), RunOptions(progress=False))
    # a FLOPs and a parameter budget give the same ranks on a chain of Linear layers
    first = runner.sweep(_config("params_auto", [0.5]), tmp_path / "params")["points"][1]
    twin = runner.sweep(_config("flops_auto", [0.5]), tmp_path / "flops")["points"][1]
    assert twin["ranks"] == first["ranks"] and twin["same_ranks_as"] == "params_auto"
    assert twin["metrics"] == first["metrics"] and len(scored) == 2  # original + one model
    plain = runner.sweep(_config("uniform", [0.5]), tmp_path / "plain")["points"][1]
    assert "same_ranks_as" not in plain  # plain SVD: another factorization, scored


def test_a_format_1_file_resumes_without_recomputing_and_becomes_format_2(tmp_path, monkeypatch):
    from balf_paper.experiments.sweep.runner import run_sweep

    x = torch.randn(16, 16, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(16) % 8
    config = SweepConfig("toy", "mlp", "flops_auto", [0.5], calib_size=16)
    out = tmp_path / "run"
    run_sweep(config, _model(), [x], [(x, labels)], out, example_input=x[:1], progress=False,
              argv=["t"])  # fmt: skip
    stored = _results(out)
    v1 = dict(stored)
    v1.pop("format"), v1.pop("metric")
    v1["config"] = {k: v for k, v in stored["config"].items()
                    if k not in ("task", "strategy", "strategy_options", "method_options",
                                 "knob_target")}  # fmt: skip
    v1["points"] = [{**{k: v for k, v in p.items() if k != "metrics"}, **p["metrics"]}
                    for p in stored["points"]]  # fmt: skip
    (out / "results.json").write_text(json.dumps(v1))
    monkeypatch.setattr(balf.Compressor, "compress", lambda *a, **k: pytest.fail("recomputed"))
    again = run_sweep(config, _model(), [x], [(x, labels)], out, example_input=x[:1],
                      progress=False, argv=["t"])  # fmt: skip
    assert again["format"] == 2
    for old, new in zip(stored["points"], again["points"], strict=True):
        assert ResultPoint.from_dict(new) == ResultPoint.from_dict(old)


def test_a_sweep_config_refuses_what_it_cannot_mean():
    with pytest.raises(BALFError, match="knob_target"):
        _config("flops_auto", [0.5], knob_target="flops")
    with pytest.raises(BALFError, match="n_iters"):
        _config("flops_auto", [0.5], method_options={"n_iters": 3})
    assert dataclasses.asdict(_config("energy_act_aware", [0.5]))["knob_target"] is None
