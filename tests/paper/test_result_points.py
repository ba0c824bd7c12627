"""ResultPoint: committed results.json points round-trip exactly; bad points are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from balf.errors import BALFError
from balf_paper.experiments.render.tables import best_point_within, best_within
from balf_paper.experiments.sweep.points import ResultPoint, SkippedPoint, read_points

REPO = Path(__file__).resolve().parents[2]
COMMITTED = sorted((REPO / "results").rglob("results.json"))


def test_there_are_committed_results():
    assert COMMITTED


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(REPO / "results")))
def test_committed_points_round_trip_exactly(path: Path):
    results = json.loads(path.read_text())
    for stored in results["points"]:
        again = ResultPoint.from_dict(stored, path).to_dict()
        assert again == stored
        assert list(again) == list(stored)  # same keys in the same order
        assert json.dumps(again) == json.dumps(stored)  # same values, same JSON types
    for stored in results.get("skipped", []):
        assert SkippedPoint.from_dict(stored, path).to_dict() == stored


def test_attributes_and_extra_keys():
    stored = {"knob": 0.5, "accuracy": 0.9, "loss": 0.3, "top5": 0.99, "flops_ratio": 0.5,
              "params_ratio": 0.4, "budget": None, "ranks": {"fc": 3}}  # fmt: skip
    p = ResultPoint.from_dict(stored)
    assert (p.accuracy, p.ratio("flops"), p.ratio("params"), p.ranks) == (0.9, 0.5, 0.4, {"fc": 3})
    assert p.extra == {"top5": 0.99} and p.budget is None and not p.is_original
    assert list(p.to_dict()) == list(stored)  # a stored null stays; no new keys appear


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
        {"knob": k, "accuracy": a, "loss": 0.0, "flops_ratio": k, "params_ratio": k}
        for k, a in ((0.55, 0.8), (0.58, 0.85), (0.57, 0.85), (0.75, 0.91))
    ]
    best = best_within([ResultPoint.from_dict(p) for p in stored], "flops", 0.6)
    assert best.knob == 0.57 and best_point_within(stored, "flops", 0.6) is stored[2]
