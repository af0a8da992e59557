"""`benchmarks/edit_word_scores.py`: which edits count as clean shape swaps, and which words play which role."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def bench(load_benchmark):
    return load_benchmark("edit_word_scores")


def _obj(shape, color="red", material="metal", size="large"):
    return {"shape": shape, "color": color, "material": material, "size": size}


def _edit(before, after, changes):
    return {"objects_original": before, "objects_edited": after, "detected_change": {"changes": changes}}


def test_only_lone_shape_changes_with_no_other_object_of_either_shape_count(bench):
    swap = {"attribute": "shape", "object": 0, "old": "cube", "new": "sphere"}
    edits = [
        _edit([_obj("cube"), _obj("cylinder")], [_obj("sphere"), _obj("cylinder")], [swap]),  # kept
        _edit([_obj("cube"), _obj("sphere")], [_obj("sphere"), _obj("sphere")], [swap]),  # the new shape was there
        _edit([_obj("cube"), _obj("cube")], [_obj("sphere"), _obj("cube")], [swap]),  # the old shape stays
        _edit([_obj("cube")], [_obj("sphere", color="blue")],
              [swap, {"attribute": "color", "object": 0, "old": "red", "new": "blue"}]),  # two changes
        _edit([_obj("cube")], [_obj("cube", color="blue")],
              [{"attribute": "color", "object": 0, "old": "red", "new": "blue"}]),  # not a shape change
        _edit([_obj("cube")], [_obj("sphere"), _obj("cylinder")], [swap]),  # an object was added
        _edit([_obj("cube")], [_obj("cube")], []),  # nothing read
    ]
    assert [k for k, _ in bench.shape_swaps(edits)] == [0]


def test_each_word_lands_in_its_role(bench):
    names = ["cube", "sphere", "cylinder", "red", "blue", "metal", "rubber", "large", "small"]
    values = {"cube": "shape", "sphere": "shape", "cylinder": "shape", "red": "color", "blue": "color",
              "metal": "material", "rubber": "material", "large": "size", "small": "size"}
    edits = [_edit([_obj("cube"), _obj("cylinder", color="red", material="rubber", size="small")],
                   [_obj("sphere"), _obj("cylinder", color="red", material="rubber", size="small")],
                   [{"attribute": "shape", "object": 0, "old": "cube", "new": "sphere"}])]
    delta = torch.arange(len(names), dtype=torch.float32)[None] / 10  # word j changes by j / 10
    roles = bench.word_deltas(delta, names, edits, bench.shape_swaps(edits), values)
    assert roles["old shape (now false)"] == [pytest.approx(0.0)]  # cube
    assert roles["new shape (now true)"] == [pytest.approx(0.1)]  # sphere
    assert roles["kept words of the object"] == [pytest.approx((0.3 + 0.5 + 0.7) / 3)]  # red, metal, large
    assert roles["absent values"] == [pytest.approx(0.4)]  # blue: every other value is held by some object
    assert roles["P(old < kept)"] == [1.0]
    assert roles["cube now false"] == [pytest.approx(0.0)] and roles["sphere now true"] == [pytest.approx(0.1)]
    # the kept words split by attribute, and size by word
    assert roles["kept color"] == [pytest.approx(0.3)] and roles["kept material"] == [pytest.approx(0.5)]
    assert roles["kept size"] == [pytest.approx(0.7)] and roles["kept large"] == [pytest.approx(0.7)]
    assert "kept small" not in roles
