"""`benchmarks/swap_redraws.py`: which swaps get a redraw, and which scene object a read swap is matched to."""

from __future__ import annotations

import pytest


@pytest.fixture
def bench(load_benchmark):
    return load_benchmark("swap_redraws")


def _obj(shape, x=0.5, y=0.5):
    return {"shape": shape, "color": "red", "material": "metal", "size": "large", "x": x, "y": y}


def test_only_one_read_shape_change_with_the_objects_kept_gets_a_redraw(bench):
    swap = {"attribute": "shape", "object": 0, "old": "cube", "new": "sphere"}
    colour = {"attribute": "color", "object": 0, "old": "red", "new": "blue"}

    def edit(after, changes):
        return {"objects_original": [_obj("cube")], "objects_edited": after, "detected_change": {"changes": changes}}

    assert bench.clean_shape_change(edit([_obj("sphere")], [swap])) == swap
    assert bench.clean_shape_change(edit([_obj("sphere")], [swap, colour])) is None  # two changes
    assert bench.clean_shape_change(edit([_obj("cube")], [colour])) is None  # not a shape
    assert bench.clean_shape_change(edit([_obj("sphere"), _obj("cube", 0.1, 0.1)], [swap])) is None  # one added
    assert bench.clean_shape_change(edit([_obj("cube")], [])) is None  # nothing read


def test_the_read_object_is_matched_to_the_nearest_scene_object_of_its_shape(bench):
    from audio_clevrgan.render import SCENE_PROFILES, SceneObject, _disc

    camera = SCENE_PROFILES["cpu"].camera
    scene = (SceneObject("cube", "red", "metal", "large", -1.5, 0.0),
             SceneObject("sphere", "blue", "rubber", "small", 1.5, 0.0),
             SceneObject("cube", "gray", "rubber", "small", 2.5, 2.0))
    u, v, _, _ = _disc(scene[1], camera)  # where the sphere is on the image
    assert bench.match_object(scene, _obj("sphere", u + 0.01, v), camera) == 1
    # a cube read at the sphere's place is matched to no object: the nearest cube is far away on the image
    far = [_disc(o, camera)[:2] for o in (scene[0], scene[2])]
    assert min(abs(fu - u) + abs(fv - v) for fu, fv in far) > 0.12
    assert bench.match_object(scene, _obj("cube", u, v), camera) is None
    u2, v2, _, _ = _disc(scene[2], camera)
    assert bench.match_object(scene, _obj("cube", u2, v2 - 0.02), camera) == 2
