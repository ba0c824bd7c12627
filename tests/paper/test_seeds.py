"""``--seeds``: one sweep per calibration seed, stored per seed, rendered as mean ± std.

End to end on a tiny CIFAR-10 (JPEG release) in the real layout with random weights, plus the
aggregation rule on hand-made results.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from _fixtures import tiny_sweep_args, write_cifar10_jpeg

from balf.errors import BALFError
from balf_paper.experiments.cli.main import main as experiments_main
from balf_paper.experiments.render.tables import matched_reduction_table
from balf_paper.experiments.render.tree import render_model
from balf_paper.experiments.sweep.seeds import aggregate_seeds, load_seed_runs, seed_dir
from balf_paper.experiments.tasks.image.data import experiment_data


def _point(knob, accuracy, flops=None):
    ratio = knob if flops is None else flops
    return {"knob": knob, "metrics": {"accuracy": accuracy, "loss": 1.0}, "flops_ratio": ratio,
            "params_ratio": ratio}  # fmt: skip


def _results(seed, points):
    return {"config": {"seed": seed}, "points": [_point("original", 0.9, 1.0), *points]}


def test_seed_folders():
    assert seed_dir("r/flops_auto", 0) == Path("r/flops_auto")
    assert seed_dir("r/flops_auto", 2) == Path("r/flops_auto/seed2")


def test_aggregate_is_mean_and_sample_std_over_knobs_every_seed_has():
    runs = {
        0: _results(0, [_point(0.5, 0.60), _point(0.7, 0.80), _point(0.9, 0.85)]),
        1: _results(1, [_point(0.5, 0.70), _point(0.7, 0.82)]),
        2: _results(2, [_point(0.5, 0.65), _point(0.7, 0.78)]),
    }
    merged = aggregate_seeds(runs)
    by_knob = {p["knob"]: p for p in merged["points"]}
    assert set(by_knob) == {"original", 0.5, 0.7}  # 0.9: seed 0 only, left out
    p = by_knob[0.5]
    assert p["metrics"]["accuracy"] == pytest.approx(0.65)
    assert p["metric_std"]["accuracy"] == pytest.approx(statistics.stdev([0.60, 0.70, 0.65]))
    assert p["seeds"] == [0, 1, 2] and p["metric_per_seed"]["accuracy"] == [0.60, 0.70, 0.65]
    assert p["metric_std"]["loss"] == 0.0  # every metric the seeds share gets its std
    assert by_knob["original"]["metric_std"]["accuracy"] == 0.0
    # a single seed is returned as it is
    assert aggregate_seeds({0: runs[0]}) == runs[0]


def test_matched_table_cells_read_mean_plus_minus_std_only_where_seeds_exist():
    seeded = aggregate_seeds(
        {0: _results(0, [_point(0.5, 0.60)]), 1: _results(1, [_point(0.5, 0.70)])}
    )
    single = _results(0, [_point(0.5, 0.80)])
    table = matched_reduction_table({"flops_auto": seeded, "energy": single}, "flops", [0.5])
    std = 100 * statistics.stdev([0.60, 0.70])
    assert table.iloc[0, 0] == f"{100 * (0.9 - 0.65):.2f} ± {std:.2f}"
    assert table.iloc[1, 0] == pytest.approx(10.0)  # plain number: one seed


@pytest.fixture
def jpeg_root(tmp_path: Path) -> Path:
    return write_cifar10_jpeg(tmp_path / "cifar10-jpeg", train=3, test=1)


def test_seeds_draw_different_calibration_subsets_on_the_same_evaluation_subset(jpeg_root):
    a = experiment_data("cifar10-jpeg", jpeg_root, "resnet20", 8, seed=0, eval_size=6)
    b = experiment_data("cifar10-jpeg", jpeg_root, "resnet20", 8, seed=0, eval_size=6,
                        calib_seed=1)  # fmt: skip
    assert a.calibration.indices != b.calibration.indices
    assert a.evaluation.indices == b.evaluation.indices
    assert a.data_tag != b.data_tag  # the statistics cache tells them apart


def test_factorize_with_seeds_stores_each_seed_resumes_and_renders_mean_std(jpeg_root, tmp_path):
    argv = ["factorize", "--dataset", "cifar10-jpeg", *tiny_sweep_args(jpeg_root, tmp_path),
            "--modes", "flops_auto", "--knobs", "0.5", "0.8", "--seeds", "0", "1", "2"]  # fmt: skip
    experiments_main(argv)
    model_dir = tmp_path / "results" / "cifar10-jpeg" / "resnet20"
    runs = load_seed_runs(model_dir / "flops_auto")
    assert list(runs) == [0, 1, 2]
    for seed, results in runs.items():
        assert results["config"]["seed"] == seed
        # evaluated on the subset of --seed (0) whatever the calibration seed
        assert results["config"]["eval_seed"] == (None if seed == 0 else 0)
        assert [p["knob"] for p in results["points"]] == ["original", 0.5, 0.8]
        command = (seed_dir(model_dir / "flops_auto", seed) / "command.txt").read_text()
        expected = "python -m balf_paper.experiments factorize --dataset cifar10-jpeg"
        assert command.startswith(expected)
        assert "--seeds 0 1 2" in command
    originals = {r["points"][0]["metrics"]["accuracy"] for r in runs.values()}
    assert len(originals) == 1  # same model, same evaluation images
    # resumed: a rerun computes nothing new
    stamp = {s: (seed_dir(model_dir / "flops_auto", s) / "results.json").read_text() for s in runs}
    experiments_main(argv)
    for s, text in stamp.items():
        after = json.loads((seed_dir(model_dir / "flops_auto", s) / "results.json").read_text())
        assert after["points"] == json.loads(text)["points"]
    files = render_model(model_dir, "cifar10-jpeg", "resnet20", formats=("png",))
    table = (model_dir / "tables" / "matched_flops.md").read_text()
    assert "±" in table and (model_dir / "figures" / "accuracy_vs_flops.png") in files


def test_duplicate_seeds_are_refused(jpeg_root, tmp_path):
    argv = ["factorize", "--dataset", "cifar10-jpeg", *tiny_sweep_args(jpeg_root, tmp_path),
            "--modes", "flops_auto", "--knobs", "0.5", "--seeds", "1", "1"]  # fmt: skip
    with pytest.raises(BALFError, match="twice"):
        experiments_main(argv)


def test_the_uncompressed_model_is_evaluated_once_for_all_seeds(jpeg_root, tmp_path, monkeypatch):
    from balf_paper.experiments.sweep.runner import DenseEvaluations

    calls = []
    real = DenseEvaluations.put  # called once per evaluation of the uncompressed model
    counted = lambda self, task, point: calls.append(1) or real(self, task, point)  # noqa: E731
    monkeypatch.setattr(DenseEvaluations, "put", counted)
    argv = ["factorize", "--dataset", "cifar10-jpeg", *tiny_sweep_args(jpeg_root, tmp_path),
            "--modes", "flops_auto", "uniform_act_aware", "--knobs", "0.8",
            "--seeds", "0", "1", "2"]  # fmt: skip
    experiments_main(argv)
    assert len(calls) == 1  # 2 modes x 3 seeds share the evaluation images
    runs = load_seed_runs(tmp_path / "results" / "cifar10-jpeg" / "resnet20" / "uniform_act_aware")
    assert len({json.dumps(r["points"][0], sort_keys=True) for r in runs.values()}) == 1
