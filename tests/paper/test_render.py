"""Figures and tables from stored results: a small fake results tree in the runner's format."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from balf.errors import BALFError
from balf_paper.experiments.render import plots, tables

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "render_results.py"
OTHER_WORKS = Path(__file__).resolve().parents[2] / "data" / "other_works.csv"
CORRUPTIONS = ("gaussian_noise", "fog", "jpeg_compression")


def _load_script():
    spec = importlib.util.spec_from_file_location("render_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _point(knob, accuracy, flops_ratio=1.0, params_ratio=1.0, **extra):
    return {
        "knob": knob,
        "accuracy": accuracy,
        "loss": 1.0 - accuracy,
        "flops_ratio": flops_ratio,
        "params_ratio": params_ratio,
        "ranks": {},
        **extra,
    }


def _results(dataset, model, mode, points, **config):
    knobs = [p["knob"] for p in points if p["knob"] != "original"]
    return {
        "config": {
            "dataset": dataset,
            "model": model,
            "mode": mode,
            "knobs": knobs,
            "calib_size": 1024,
            "seed": 0,
            "n_iters": 300,
            "eval_size": None,
            "extra": {},
            **config,
        },
        "environment": {"torch": "2.14.1", "device": "cpu", "git_commit": "abc"},
        "points": points,
    }


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _sweep_points(scale: float):
    """Original at 92% and four compressed points whose accuracy falls with the ratio."""
    pts = [_point("original", 0.92)]
    for r in (0.4, 0.6, 0.8, 0.9):
        pts.append(_point(r, 0.92 - scale * (1 - r) ** 2, r * 0.98, r * 1.02))
    return pts


def _corrupted_point(knob, accuracy, flops_ratio=1.0):
    per = {
        c: {str(s): max(accuracy - 0.08 * s - 0.02 * i, 0.1) for s in range(1, 6)}
        for i, c in enumerate(CORRUPTIONS)
    }
    mean = sum(a for sev in per.values() for a in sev.values()) / (5 * len(per))
    return _point(knob, accuracy, flops_ratio, flops_ratio, corrupted=per, corrupted_accuracy=mean)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/cifar10/resnet20 with 2 modes, calib-size, n-iters, corruption; a benchmark."""
    root = tmp_path_factory.mktemp("results")
    model_dir = root / "cifar10" / "resnet20"
    for mode, scale in (("flops_auto", 0.5), ("energy", 1.2)):
        _write(
            model_dir / mode / "results.json",
            _results("cifar10", "resnet20", mode, _sweep_points(scale)),
        )
    for size, drop in ((256, 0.03), (1024, 0.02), (4096, 0.015)):
        pts = [_point("original", 0.92)] + [
            _point(r, 0.92 - drop / r, r, r) for r in (0.4, 0.5, 0.7, 0.8)
        ]
        res = _results("cifar10", "resnet20", "params_auto", pts, calib_size=size)
        _write(model_dir / "calib-size" / f"calib{size}" / "results.json", res)
    for n, gap in ((1, 0.3), (10, 1e-3), (100, 0.0)):
        pts = [_point("original", 0.92)] + [
            _point(r, 0.9 - gap, r, r, budget=1000.0 * r, achieved=1000.0 * r * (1 - gap))
            for r in (0.4, 0.6, 0.8)
        ]
        res = _results("cifar10", "resnet20", "flops_auto", pts, n_iters=n)
        _write(model_dir / "n-iters" / f"iters{n}" / "results.json", res)
    for mode in ("params_auto", "flops_auto"):
        pts = [_corrupted_point("original", 0.92)] + [
            _corrupted_point(r, 0.92 - 0.3 * (1 - r), r) for r in (0.6, 0.7, 0.8)
        ]
        res = _results("cifar10", "resnet20", mode, pts)
        _write(model_dir / "corruption" / mode / "results.json", res)
    bench = [
        {
            "model": "resnet18",
            "phases": {"statistics": 30.5, "decomposition": 4.2, "allocation": 0.1},
            "total": 35.0,
            "forward": 12.0,
            "peak_memory_gb": 2.5,
        },
        {
            "model": "vit_b_16",
            "mode": "flops_auto",
            "ratio": 0.6,
            "phases": {"replacement": 0.4, "measurement": 1.5},
            "total": 50.0,
            "peak_rss_increase_gb": 1.25,
        },
    ]
    _write(root / "benchmarks" / "compression_time.json", {"benchmark": "x", "rows": bench})
    (root / "cifar10" / "checkpoints" / "resnet20").mkdir(parents=True)
    return root


def _assert_figures(paths: list[Path], stem: Path) -> None:
    assert sorted(paths) == sorted([stem.with_suffix(".pdf"), stem.with_suffix(".png")])
    for p in paths:
        data = p.read_bytes()
        assert len(data) > 1000
        assert data[:4] == (b"%PDF" if p.suffix == ".pdf" else b"\x89PNG")
    assert not list(stem.parent.glob(".*.tmp")) and not list(stem.parent.glob(".*"))


def _tabular_rows(tex: str) -> int:
    """Check booktabs structure; return the number of body rows."""
    assert tex.count(r"\begin{tabular}") == 1 == tex.count(r"\end{tabular}")
    assert tex.index(r"\begin{tabular}") < tex.index(r"\end{tabular}")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(rule) == 1
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    rows = [line for line in body.strip().splitlines() if line.strip()]
    assert all(line.rstrip().endswith(r"\\") for line in rows)
    return len(rows)


# ----------------------------------------------------------------------------- plots


@pytest.mark.parametrize("quantity", ["flops", "params"])
def test_accuracy_vs_ratio(tree: Path, tmp_path: Path, quantity: str):
    sweeps = tables.load_mode_results(tree / "cifar10" / "resnet20")
    assert list(sweeps) == ["flops_auto", "energy"]  # display order, special dirs skipped
    stem = tmp_path / f"acc_{quantity}"
    paths = plots.plot_accuracy_vs_ratio(
        sweeps,
        quantity,
        stem,
        dataset="cifar10",
        model="resnet20",
        other_works=plots.load_other_works(OTHER_WORKS),
    )
    _assert_figures(paths, stem)


def test_accuracy_vs_ratio_modes_filter(tree: Path, tmp_path: Path):
    sweeps = tables.load_mode_results(tree / "cifar10" / "resnet20")
    paths = plots.plot_accuracy_vs_ratio(
        sweeps, "flops", tmp_path / "only", modes=["energy"], formats=["png"]
    )
    assert [p.name for p in paths] == ["only.png"]
    for works in (None, plots.load_other_works(OTHER_WORKS)):  # no table / no matching rows
        plots.plot_accuracy_vs_ratio(
            sweeps,
            "params",
            tmp_path / "fm",
            dataset="fashion-mnist",
            model="resnet20",
            other_works=works,
            formats=["png"],
        )
    with pytest.raises(BALFError):
        plots.plot_accuracy_vs_ratio(sweeps, "flops", tmp_path / "none", modes=["uniform"])


def test_other_works_selection():
    works = plots.load_other_works(OTHER_WORKS)
    sel = plots._work_points(works, "cifar10", "resnet20", "params")
    assert set(sel["method"]) == {"ALDS", "IterTVSPrune"}
    assert plots._work_points(works, "fashion-mnist", "resnet20", "params").empty
    folding = plots._work_points(works, "cifar10", "resnet18", "params")
    assert (folding["delta_quantity_pct"] < 0).all() and len(folding) >= 4


def test_calibration_size_plot(tree: Path, tmp_path: Path):
    runs = tables.load_numbered_runs(tree / "cifar10" / "resnet20" / "calib-size", "calib")
    assert list(runs) == [256, 1024, 4096]
    _assert_figures(plots.plot_calibration_size(runs, tmp_path / "calib"), tmp_path / "calib")


def test_n_iters_plot(tree: Path, tmp_path: Path):
    runs = tables.load_numbered_runs(tree / "cifar10" / "resnet20" / "n-iters", "iters")
    _assert_figures(plots.plot_n_iters(runs, tmp_path / "iters"), tmp_path / "iters")


def test_corruption_plot_and_table(tree: Path, tmp_path: Path):
    runs = tables.load_mode_results(tree / "cifar10" / "resnet20" / "corruption")
    _assert_figures(plots.plot_corruption(runs, tmp_path / "corr"), tmp_path / "corr")
    df = tables.corruption_table(runs)
    assert list(df.index) == ["clean", *CORRUPTIONS, "mean"]
    assert len(df.columns) == 1 + 2 * 3  # original + (2 modes x 3 ratios)
    point = runs["flops_auto"]["points"][1]
    column = f"{tables.mode_label('flops_auto')} {point['knob']:g}"
    assert df.loc["mean", column] == pytest.approx(100 * point["corrupted_accuracy"])
    assert df.loc["clean", "original"] == pytest.approx(92.0)
    assert _tabular_rows(tables.to_latex(df)) == len(CORRUPTIONS) + 2


# ----------------------------------------------------------------------------- tables


def test_matched_reduction_rule():
    pts = [
        _point(0.55, 0.80, flops_ratio=0.55),
        _point(0.58, 0.85, flops_ratio=0.58),
        _point(0.62, 0.90, flops_ratio=0.62),
        _point(0.75, 0.91, flops_ratio=0.75),
        _point(0.57, 0.85, flops_ratio=0.57),  # same accuracy as 0.58: the smaller ratio wins
    ]
    assert tables.best_point_within(pts, "flops", 0.6)["knob"] == 0.57
    assert tables.best_point_within(pts, "flops", 0.62)["knob"] == 0.62  # ≤, not <
    assert tables.best_point_within(pts, "flops", 0.5) is None
    assert tables.best_point_within(pts, "flops", 0.9)["knob"] == 0.75

    results = {"points": [_point("original", 0.92), *pts]}
    df = tables.matched_reduction_table({"flops_auto": results}, "flops", [0.9, 0.6, 0.5])
    assert list(df.columns) == ["0.9", "0.6", "0.5"]
    row = df.loc[tables.mode_label("flops_auto")]
    assert row["0.9"] == pytest.approx(1.0)
    assert row["0.6"] == pytest.approx(7.0)
    assert math.isnan(row["0.5"])
    tex = tables.to_latex(df)
    assert "--" in tex and _tabular_rows(tex) == 1
    assert "–" in tables.to_markdown(df)


def test_tables_latex_and_markdown(tree: Path, tmp_path: Path):
    model_dir = tree / "cifar10" / "resnet20"
    sweeps = tables.load_mode_results(model_dir)
    calib = tables.load_numbered_runs(model_dir / "calib-size", "calib")
    bench = tables.load_benchmark_rows(tree / "benchmarks" / "compression_time.json")
    frames = {
        "matched": (tables.matched_reduction_table(sweeps, "params"), 2),
        "calib": (tables.calibration_size_table(calib), 3),
        "time": (tables.compression_time_table(bench), 2),
    }
    assert list(frames["calib"][0].columns) == ["original", "0.4", "0.5", "0.7", "0.8"]
    time = frames["time"][0]
    assert time.loc["resnet18", "Statistics (s)"] == 30.5
    assert math.isnan(time.loc["vit_b_16", "Peak memory (GB)"])
    assert time.loc["vit_b_16", "Measurement (s)"] == 1.5
    assert time.loc["vit_b_16", "Peak RSS increase (GiB)"] == 1.25
    assert "Peak CUDA memory (GiB)" not in time.columns
    for name, (df, n_rows) in frames.items():
        paths = tables.write_table(df, tmp_path / name, caption="50% of a_b ≤ x", label="tab:x")
        tex, md = (p.read_text() for p in paths)
        assert _tabular_rows(tex) == n_rows
        assert r"\caption{50\% of a\_b $\leq$ x}" in tex and r"\label{tab:x}" in tex
        lines = [line for line in md.splitlines() if line.startswith("|")]
        assert len(lines) == n_rows + 2
        assert len({line.count(" | ") for line in lines[2:]} | {lines[0].count(" | ")}) == 1


@pytest.mark.parametrize(
    "payload",
    [
        {"rows": [{"model": "a", "total": 1.0}]},
        {"a": {"total": 1.0, "phases": {"statistics": "n/a"}}},
        [{"model": "a", "total": 1.0}, {"total": 2.0}, "junk"],
    ],
    ids=["rows-key", "model-mapping", "list-with-junk"],
)
def test_benchmark_schema_variants(tmp_path: Path, payload):
    path = tmp_path / "b.json"
    _write(path, payload)
    rows = tables.load_benchmark_rows(path)
    assert [r["model"] for r in rows] == ["a"]
    df = tables.compression_time_table(rows)
    assert df.loc["a", "Total (s)"] == 1.0 and math.isnan(df.loc["a", "Statistics (s)"])


# ----------------------------------------------------------------------------- script


def test_render_results_script(tree: Path):
    script = _load_script()
    argv = ["--results-root", str(tree), "--formats", "pdf", "png", "--log-level", "WARNING"]
    script.main(argv)
    model_dir = tree / "cifar10" / "resnet20"
    figures = {p.name for p in (model_dir / "figures").iterdir()}
    stems = ["accuracy_vs_flops", "accuracy_vs_params", "calib_size", "n_iters", "corruption"]
    assert figures == {f"{s}.{ext}" for s in stems for ext in ("pdf", "png")}
    table_stems = ["matched_flops", "matched_params", "points", "calib_size", "corruption"]
    assert {p.name for p in (model_dir / "tables").iterdir()} == {
        f"{s}.{ext}" for s in table_stems for ext in ("tex", "md")
    }
    bench = (tree / "benchmarks" / "compression_time.tex").read_text()
    assert _tabular_rows(bench) == 2
    assert not (tree / "cifar10" / "checkpoints" / "resnet20" / "figures").exists()

    # idempotent: a second run rewrites byte-identical files (PDFs carry no creation date).
    # PDF and tables only, to keep the test short.
    files = sorted(p for p in model_dir.rglob("*") if p.suffix in (".pdf", ".tex", ".md"))
    before = {p: (p.read_bytes(), p.stat().st_ino) for p in files}
    script.main([*argv[:2], "--formats", "pdf", "--datasets", "cifar10", "--log-level", "ERROR"])
    for p in files:
        assert p.stat().st_ino != before[p][1], f"{p.name} not rewritten"
        assert p.read_bytes() == before[p][0], f"{p.name} changed"


def test_points_table_lists_every_compressed_point_with_seeds_as_mean_std():
    from balf_paper.experiments.render.tables import points_table

    def point(knob, acc, std=None, factorized=3):
        p = {"knob": knob, "metrics": {"accuracy": acc, "loss": 1.0}, "flops_ratio": knob,
             "params_ratio": knob / 2, "factorized_layers": factorized}  # fmt: skip
        return p if std is None else {**p, "metric_std": {"accuracy": std}}

    original = {"knob": "original", "accuracy": 0.9, "loss": 0.5, "flops_ratio": 1.0,
                "params_ratio": 1.0}  # fmt: skip  (format 1: read through the converter)
    sweeps = {
        "uniform": {"points": [original, point(0.9, 0.5), point(0.5, 0.1, factorized=None)]},
        "flops_auto": {"points": [original, point(0.7, 0.8, std=0.01)]},
    }
    table = points_table(sweeps)
    assert list(table.index) == ["Uniform, plain SVD 0.5", "Uniform, plain SVD 0.9",
                                 "BALF (FLOPs budget) 0.7"]  # fmt: skip
    assert table.loc["BALF (FLOPs budget) 0.7"].tolist() == ["80.00 ± 1.00", "0.700", "0.350", "3"]
    assert table.loc["Uniform, plain SVD 0.9", "Top-1 (%)"] == 50.0
    assert math.isnan(table.loc["Uniform, plain SVD 0.5", "Layers factorized"])  # none stored


def test_format_1_and_format_2_results_render_the_same_tables_and_figures(tmp_path: Path):
    """The committed format-1 files render through the converter exactly as their format-2
    conversion does (what a resumed sweep writes)."""
    from balf_paper.experiments.render.tree import render_model
    from balf_paper.experiments.sweep.points import ResultPoint

    source = Path(__file__).resolve().parents[2] / "results/quickstart/fashion-mnist/resnet20"
    rendered = {}
    for name in ("v1", "v2"):
        model_dir = tmp_path / name / "resnet20"
        for results in source.glob("*/results.json"):
            data = json.loads(results.read_text())
            assert "format" not in data  # committed in format 1
            if name == "v2":
                data["points"] = [ResultPoint.from_dict(p).to_dict() for p in data["points"]]
                assert all("metrics" in p for p in data["points"])
            target = model_dir / results.parent.name / "results.json"
            target.parent.mkdir(parents=True)
            target.write_text(json.dumps(data))
        files = render_model(model_dir, "fashion-mnist", "resnet20", formats=("png",))
        rendered[name] = {f.relative_to(model_dir): f.read_bytes() for f in files}
    assert rendered["v1"] and rendered["v1"] == rendered["v2"]
