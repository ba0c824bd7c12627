"""The single-layer, speed and latency studies re-rendered from their JSON (nothing is measured).

- a small hand-made JSON of each of the single-layer and speed studies renders its figure;
- re-rendering the committed ``results/svd_vs_actaware`` and ``results/benchmarks`` JSON
  reproduces every committed figure and table beside it byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from balf_paper.experiments.render.studies import render_studies
from balf_paper.experiments.render.tree import render_all

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results"
STUDY_FOLDERS = ("svd_vs_actaware", "benchmarks")


def _svd_json() -> dict:
    def point(ratio: float) -> dict:
        err = {"calibration": 1 - ratio, "heldout": 1.1 * (1 - ratio)}
        return {"ratio": ratio, "rank": int(8 * ratio), "rank_fraction": ratio,
                "bound": 0.5 * (1 - ratio), "svd": err,
                "act_aware": {k: 0.5 * v for k, v in err.items()}}  # fmt: skip

    geometry = {"groups": 1, "in_dim": 8, "out_dim": 8, "max_rank": 8}
    layers = [
        {"panel": panel, "name": panel, "description": panel, "geometry": geometry,
         "calibration_rows": 4, "heldout_rows": 4, "points": [point(0.25), point(1.0)]}
        for panel in ("linear", "conv", "grouped_conv")
    ]  # fmt: skip
    return {"source": "synthetic", "layers": layers}


def _speed_json() -> dict:
    rows = [
        {"model": "m", "variant": v, "batch_size": b, "flops_reduction": red, "speedup": sp}
        for v, red, sp in (("original", 1.0, 1.0), ("flops_auto@0.5", 2.0, 1.5))
        for b in (1, 8)
    ]
    return {"benchmark": "speed", "environment": {"device": "cpu"}, "rows": rows}


def test_render_of_fixture_json_writes_the_figures(tmp_path: Path):
    svd = tmp_path / "svd_vs_actaware" / "svd_vs_actaware_synthetic.json"
    speed = tmp_path / "benchmarks" / "speed_cpu.json"
    for path, data in ((svd, _svd_json()), (speed, _speed_json())):
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(data))
    written = render_studies(tmp_path)
    expected = {p.with_suffix(s) for p in (svd, speed) for s in (".pdf", ".png")}
    assert set(written) == expected
    assert all(p.stat().st_size > 0 for p in expected)
    # rerunning rewrites identical files (PDFs carry no creation date)
    before = {p: p.read_bytes() for p in expected}
    render_studies(tmp_path)
    assert {p: p.read_bytes() for p in expected} == before


def test_render_all_includes_the_studies_and_skips_an_empty_root(tmp_path: Path):
    assert render_studies(tmp_path) == []
    path = tmp_path / "benchmarks" / "speed_cpu.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_speed_json()))
    written = render_all(tmp_path)
    assert {path.with_suffix(".pdf"), path.with_suffix(".png")} <= set(written)


def _committed_inputs(dst: Path) -> Path:
    """The committed studies' JSON files only, in their folders under ``dst``."""
    for folder in STUDY_FOLDERS:
        for src in (RESULTS / folder).rglob("*.json"):
            target = dst / src.relative_to(RESULTS)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
    return dst


def test_committed_studies_regenerate_byte_for_byte(tmp_path: Path):
    assert (RESULTS / "svd_vs_actaware").is_dir(), "the committed study results are missing"
    root = _committed_inputs(tmp_path / "results")
    written = render_studies(root)
    suffixes = {p.suffix for p in written}
    assert {".pdf", ".png", ".md"} <= suffixes
    for path in written:
        committed = RESULTS / path.relative_to(root)
        assert committed.is_file(), f"{committed} is not committed"
        assert path.read_bytes() == committed.read_bytes(), f"{committed} is stale"
    # every committed figure of these studies is regenerated
    figures = {
        p.relative_to(RESULTS)
        for folder in STUDY_FOLDERS
        for p in (RESULTS / folder).rglob("*")
        if p.suffix in (".pdf", ".png")
    }
    assert figures <= {p.relative_to(root) for p in written}
