"""`benchmarks/swap_directions.py`: per swap direction, the edits kept, read as the target, and as only that."""

from __future__ import annotations

import json

import pytest


def _obj(shape, x=0.5, y=0.5, confidence=0.9):
    return {"shape": shape, "color": "red", "material": "metal", "size": "large", "x": x, "y": y,
            "confidence": confidence}


def test_directions_count_the_target_reads_and_the_clean_ones(load_benchmark, tmp_path):
    bench = load_benchmark("swap_directions")
    to_sphere = {"attribute": "shape", "object": 0, "old": "cube", "new": "sphere"}
    colour = {"attribute": "color", "object": 0, "old": "red", "new": "blue"}
    rows = [  # cube -> sphere read cleanly; cube -> sphere with a colour change too; sphere -> cube not drawn
        {"concept": "cube", "inserted": None, "objects_original": [_obj("cube")],
         "objects_edited": [_obj("cube", 0.1, 0.1), _obj("sphere", 0.52, 0.5, 0.8)],
         "detected_change": {"changes": [to_sphere], "single_attribute": True}},
        {"concept": "cube", "inserted": None, "objects_original": [_obj("cube")], "objects_edited": [_obj("sphere")],
         "detected_change": {"changes": [to_sphere, colour], "single_attribute": False}},
        {"concept": None, "inserted": "cube", "objects_original": [_obj("sphere")], "objects_edited": [_obj("sphere")],
         "detected_change": {"changes": [], "single_attribute": False}},
    ]
    (tmp_path / "edits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = bench.directions(tmp_path, "sphere")
    assert set(table) == {"cube -> sphere", "sphere -> cube"}
    kept, hit, only, conf = table["cube -> sphere"]
    assert (kept, hit, only) == (2, 2, 1)
    assert conf == pytest.approx([0.8, 0.9])  # the object nearest the edited one among those of the target shape
    assert table["sphere -> cube"][:3] == [1, 0, 0]
