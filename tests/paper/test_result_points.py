"""ResultPoint: one point format for every task; committed format-1 points are converted
losslessly, format-2 points round-trip exactly; bad points are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from balf.errors import BALFError
from balf_paper.experiments.render.tables import best_point_within, best_within
from balf_paper.experiments.sweep.points import (
    ResultPoint,
    SkippedPoint,
    read_points,
    upgrade_point,
)

REPO = Path(__file__).resolve().parents[2]
COMMITTED = sorted((REPO / "results").rglob("results.json"))


def test_there_are_committed_results():
    assert COMMITTED


def _flat(point: dict) -> dict:
    """A format-2 point with its metrics back at the top level, where format 1 kept them."""
    out = {}
    for key, value in point.items():
        out.update(value if key == "metrics" else {key: value})
    return out


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(REPO / "results")))
def test_committed_points_are_read_losslessly(path: Path):
    results = json.loads(path.read_text())
    for stored in results["points"]:
        point = ResultPoint.from_dict(stored, path)
        again = point.to_dict()
        if "metrics" in stored:  # format 2: exact round trip
            assert json.dumps(again) == json.dumps(stored)
        else:  # format 1: every key and value kept, in order, the scores inside metrics
            assert json.dumps(_flat(again)) == json.dumps(stored)
            assert point.accuracy == stored["accuracy"] and point.loss == stored["loss"]
        assert json.dumps(ResultPoint.from_dict(again).to_dict()) == json.dumps(again)
    for stored in results.get("skipped", []):
        assert SkippedPoint.from_dict(stored, path).to_dict() == stored


def test_committed_results_hold_both_formats_and_the_language_studies_are_format_2():
    formats = {p.relative_to(REPO / "results").parts[0]: json.loads(p.read_text()).get("format", 1)
               for p in COMMITTED}  # fmt: skip
    assert formats["language"] == 2 and set(formats.values()) <= {1, 2}


def test_upgrading_moves_every_score_into_metrics_in_order():
    stored = {"knob": 0.5, "accuracy": 0.9, "loss": 0.3, "corrupted_accuracy": 0.5,
              "corrupted": {"fog": {"1": 0.6}}, "eval_samples": 10, "flops_ratio": 0.5,
              "params_ratio": 0.4, "top5": 0.99}  # fmt: skip
    upgraded = upgrade_point(stored)
    assert list(upgraded) == ["knob", "metrics", "eval_samples", "flops_ratio", "params_ratio"]
    assert list(upgraded["metrics"]) == ["accuracy", "loss", "corrupted_accuracy", "corrupted",
                                         "top5"]  # fmt: skip
    assert _flat(upgraded) == stored


def test_attributes_and_extra_keys():
    stored = {"knob": 0.5, "metrics": {"accuracy": 0.9, "loss": 0.3, "top5": 0.99},
              "flops_ratio": 0.5, "params_ratio": 0.4, "budget": None, "ranks": {"fc": 3},
              "note": "kept"}  # fmt: skip
    p = ResultPoint.from_dict(stored)
    assert (p.accuracy, p.ratio("flops"), p.ratio("params"), p.ranks) == (0.9, 0.5, 0.4, {"fc": 3})
    assert p.metric("top5") == 0.99 and p.metric("perplexity") is None
    assert p.extra == {"note": "kept"} and p.budget is None and not p.is_original
    assert list(p.to_dict()) == list(stored)  # a stored null stays; no new keys appear


@pytest.mark.parametrize("missing", ["knob", "metrics", "flops_ratio", "params_ratio"])
def test_a_format_2_point_names_a_missing_required_field(missing: str):
    stored = {"knob": 0.5, "metrics": {"perplexity": 20.0}, "flops_ratio": 0.5,
              "params_ratio": 0.4}  # fmt: skip
    del stored[missing]
    if missing == "metrics":  # read as format 1, which names its own required fields
        with pytest.raises(BALFError, match=r"r\.json.*'accuracy', 'loss'"):
            ResultPoint.from_dict(stored, "r.json")
        return
    with pytest.raises(BALFError, match=rf"r\.json.*'{missing}'"):
        ResultPoint.from_dict(stored, "r.json")


@pytest.mark.parametrize("missing", ["knob", "accuracy", "loss", "flops_ratio", "params_ratio"])
def test_a_missing_required_field_names_the_file_and_field(missing: str):
    stored = {"knob": 0.5, "accuracy": 0.9, "loss": 0.3, "flops_ratio": 0.5, "params_ratio": 0.4}
    del stored[missing]
    with pytest.raises(BALFError, match=rf"runs/x/results\.json.*'{missing}'"):
        read_points({"points": [stored]}, "runs/x/results.json")


@pytest.mark.parametrize("knob", ["half", True, None])
def test_a_knob_is_a_number_or_original(knob):
    stored = {"knob": knob, "accuracy": 0.9, "loss": 0.3, "flops_ratio": 0.5, "params_ratio": 0.4}
    with pytest.raises(BALFError, match="knob"):
        ResultPoint.from_dict(stored, "r.json")


def test_best_within_on_points_and_on_stored_objects_agree():
    stored = [
        {"knob": k, "metrics": {"accuracy": a}, "flops_ratio": k, "params_ratio": k}
        for k, a in ((0.55, 0.8), (0.58, 0.85), (0.57, 0.85), (0.75, 0.91))
    ]
    best = best_within([ResultPoint.from_dict(p) for p in stored], "flops", 0.6)
    assert best.knob == 0.57 and best_point_within(stored, "flops", 0.6) is stored[2]
