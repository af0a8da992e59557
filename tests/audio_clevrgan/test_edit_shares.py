"""`benchmarks/edit_shares.py`: the share of edits per attribute and per value a gan-scene-edit row draws."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def bench(load_benchmark):
    return load_benchmark("edit_shares")


@pytest.fixture
def lone_objects():
    from audio_clevrgan.render import SceneConfig, sample_scenes

    return sample_scenes(np.random.default_rng(0), 400, SceneConfig(min_objects=1, max_objects=1))


def test_a_lone_objects_shape_is_changed_whatever_its_values_weight(bench, lone_objects):
    """Oracle: in one-object scenes the only shape edits are that object's, so the per-value counts are, by brute
    force, the shapes of the scenes where some shape change keeps the placement rules, with or without ``values``:
    the weights cannot move a lone object's share."""
    from audio_clevrgan.render import SCENE_PROFILES, edit_scene, scene_is_valid
    from audio_clevrgan.vocab import VALUES

    editable = Counter(scene[0].shape for scene in lone_objects
                       if any(scene_is_valid(edit_scene(scene, 0, "shape", v), SCENE_PROFILES["cpu"])
                              for v in VALUES["shape"] if v != scene[0].shape))
    for options in ({"attributes": "shape"}, {"attributes": "shape", "values": "cube:5"}):
        none, by_attribute, by_value = bench.shares(options, lone_objects)
        assert set(by_attribute) == {"shape"}
        assert {v: n for (_, v), n in by_value.items()} == dict(editable)
        assert none == pytest.approx(1 - sum(editable.values()) / len(lone_objects))


def test_attribute_weights_set_the_attribute_shares_when_every_edit_is_valid(bench, lone_objects):
    """Colour and material edits never move a boundary, so every draw is valid and the shares follow the weights
    (3:1 within 3 standard errors of 400 draws)."""
    none, by_attribute, _ = bench.shares({"attributes": "color:3,material:1", "balance": "attribute"}, lone_objects)
    assert none == 0 and set(by_attribute) == {"color", "material"}
    share = by_attribute["color"] / len(lone_objects)
    assert abs(share - 0.75) < 3 * (0.75 * 0.25 / len(lone_objects)) ** 0.5, share


def test_the_experiment_files_rows_are_found_with_their_options(bench):
    from negmine.experiment import load_experiment

    exp = load_experiment(Path(__file__).resolve().parents[2] / "examples" / "audio_clevrgan" / "experiments"
                          / "scene-iso05-excl-cpu.toml")
    options = {m.name: bench.edit_options(m) for m in exp.methods}
    assert options["DaveNet"] == []
    assert options["Oracle Edits (shape only, cube 2x, edit weight 0.5, from step 0)"] == [
        {"attributes": "shape", "values": "cube:2"}]
