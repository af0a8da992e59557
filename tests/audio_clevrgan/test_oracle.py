"""The ``render-edit`` oracle: each negative is its anchor's scene with exactly one attribute of one object changed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audio_clevrgan import dataset as ds
from audio_clevrgan.oracle import RenderedEdits
from audio_clevrgan.render import edit_scene, render_scenes, scene_from_dicts, to_uint8
from audio_clevrgan.task import build_task
from audio_clevrgan.vocab import ATTRIBUTES, VALUES
from negmine.errors import ConfigError, MissingCapabilityError
from negmine.testing import check_generator, make_context, make_task


@pytest.fixture
def rendered(acg_rendered):
    return acg_rendered


def test_rendered_rows_keep_their_scene(rendered):
    _, rows = ds.read_dataset(rendered)
    row = rows[3]
    image = to_uint8(render_scenes([scene_from_dicts(row["scene"])], resolution=64).images)[0]
    assert np.array_equal(image, ds.load_image(rendered / row["image"]))  # the stored scene re-renders the PNG


def test_oracle_edits_exactly_one_attribute_of_one_object(rendered):
    task = build_task("tiny", options={"data_dir": str(rendered)})
    assert "scenes" in task.provides
    out = check_generator(RenderedEdits, task, batch_size=8)  # contract, determinism, state round trip
    negs = out[0]
    assert negs.inputs.shape == (8, 1, 3, 64, 64) and negs.inputs.dtype == torch.uint8
    gen = RenderedEdits(seed=0, task=task)
    batch = task.train.batch(torch.arange(8))
    with torch.no_grad():
        emb = (task.model.encode(0, batch.a), task.model.encode(1, batch.b))
        scores = task.model.score_matrix(*emb)
    negs = gen.mine(make_context(scores, task=task, embeddings=emb))[0]
    edited = negs.inputs[:, 0]
    for i in range(8):
        scene = scene_from_dicts(task.train.scenes[i])
        changed = ATTRIBUTES[int(negs.meta["category"][i, 0])]
        assert not torch.equal(edited[i], batch.a[i])  # the image changed
        # re-render every single-attribute edit of that attribute: exactly one reproduces the negative
        hits = 0
        for k, obj in enumerate(scene):
            for v in VALUES[changed]:
                if v != getattr(obj, changed):
                    img = torch.from_numpy(to_uint8(render_scenes([edit_scene(scene, k, changed, v)],
                                                                  resolution=64).images)[0]).permute(2, 0, 1)
                    hits += int(torch.equal(img, edited[i]))
        assert hits == 1


def test_oracle_needs_a_rendered_dataset_and_valid_attributes():
    with pytest.raises(MissingCapabilityError):
        RenderedEdits.check_requirements(make_task())
    with pytest.raises(ConfigError, match="distinct names from"):
        RenderedEdits(RenderedEdits.Options(attributes="shape,colour"))


def test_oracle_attribute_weights_are_parsed_and_bad_ones_reported_together():
    oracle = RenderedEdits(RenderedEdits.Options(attributes="shape:4, color:1,material:0.5,size", balance="attribute"))
    assert oracle.attributes == ("shape", "color", "material", "size")
    assert oracle.weights == (4.0, 1.0, 0.5, 1.0)
    plain = RenderedEdits(RenderedEdits.Options(attributes="shape,size"))
    assert plain.attributes == ("shape", "size") and plain.weights is None
    with pytest.raises(ConfigError) as err:
        RenderedEdits(RenderedEdits.Options(attributes="shape:0,color:x,size:inf,shape,colour:1", balance="value"))
    message = str(err.value)
    for bad in ("'shape:0'", "'color:x'", "'size:inf'", "'shape'", "'colour:1'", "need balance 'attribute'"):
        assert bad in message, (bad, message)


def test_train_with_the_oracle(rendered, tmp_path):
    from negmine.cli import main

    run = tmp_path / "run"
    assert main(["train", "--task", "audio-clevrgan", "--profile", "tiny", "--task-option", f"data_dir={rendered}",
                 "-n", "random", "-n", "render-edit", "--render-edit-attributes", "color", "--steps", "2",
                 "--batch-size", "8", "--run-dir", str(run), "-q"]) == 0
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in line][-1]
    assert last["render-edit/side0/count"] == 8
    run2 = tmp_path / "run2"  # two balanced edits per anchor, the hardest kept by the group's reduction
    assert main(["train", "--task", "audio-clevrgan", "--profile", "tiny", "--task-option", f"data_dir={rendered}",
                 "-n", "random", "-n", "render-edit", "--render-edit-per-anchor", "2", "--render-edit-balance",
                 "attribute", "--reduction", "mean", "--reduction", "hardest", "--steps", "2", "--batch-size", "8",
                 "--run-dir", str(run2), "-q"]) == 0
    last = [json.loads(line) for line in (run2 / "metrics.jsonl").read_text().splitlines() if "loss" in line][-1]
    assert last["render-edit/side0/count"] == 16


def _scene(rendered):
    _, rows = ds.read_dataset(rendered)
    return next(scene_from_dicts(r["scene"]) for r in rows if len(r["scene"]) >= 3)


def test_value_balance_draws_uniformly_over_every_change(rendered):
    """The default draw is unchanged: a permutation of every (object, attribute, value) change, first valid kept."""
    from audio_clevrgan.render import SCENE_PROFILES, Edit, random_edit, scene_is_valid

    scene = _scene(rendered)
    for seed in range(20):
        got = random_edit(scene, np.random.default_rng(seed), SCENE_PROFILES["cpu"])
        rng = np.random.default_rng(seed)
        cands = [Edit(i, a, getattr(o, a), v) for i, o in enumerate(scene) for a in ATTRIBUTES for v in VALUES[a]
                 if v != getattr(o, a)]
        for k in rng.permutation(len(cands)):
            new = edit_scene(scene, cands[k].index, cands[k].attribute, cands[k].new)
            if cands[k].attribute in ("color", "material") or scene_is_valid(new, SCENE_PROFILES["cpu"]):
                assert got == (new, cands[k])
                break


def test_attribute_balance_changes_each_attribute_equally_often(rendered):
    from audio_clevrgan.render import random_edit

    scene = _scene(rendered)
    rng = np.random.default_rng(0)
    counts = {a: 0 for a in ATTRIBUTES}
    by_value = {a: 0 for a in ATTRIBUTES}
    n = 2000
    for _ in range(n):
        new, e = random_edit(scene, rng, None, balance="attribute")
        counts[e.attribute] += 1
        assert sum(x != y for o, p in zip(scene, new, strict=True) for x, y in zip(vars(o).values(), vars(p).values(), strict=True)) == 1
        by_value[random_edit(scene, rng, None)[1].attribute] += 1
    for a in ATTRIBUTES:
        assert abs(counts[a] / n - 0.25) < 0.04, counts
    assert by_value["color"] / n > 0.55  # the default: 7 of 11 changes per object are colours
    with pytest.raises(ValueError, match="balance"):
        random_edit(scene, rng, None, balance="object")


def test_attribute_weights_draw_each_attribute_in_proportion(rendered):
    from audio_clevrgan.render import random_edit

    scene = _scene(rendered)
    rng = np.random.default_rng(1)
    counts = {a: 0 for a in ATTRIBUTES}
    n = 3000
    weights = {"shape": 4.0, "color": 1.0, "material": 1.0, "size": 2.0}
    for _ in range(n):
        counts[random_edit(scene, rng, None, ATTRIBUTES, "attribute", [weights[a] for a in ATTRIBUTES])[1].attribute] += 1
    for a in ATTRIBUTES:
        assert abs(counts[a] / n - weights[a] / 8) < 0.03, counts
    # weights only with balance 'attribute', one positive number per attribute
    for bad in ({"balance": "value", "weights": [1, 1, 1, 1]}, {"balance": "attribute", "weights": [1, 1]},
                {"balance": "attribute", "weights": [1, 0, 1, 1]}):
        with pytest.raises(ValueError, match="weights"):
            random_edit(scene, rng, None, ATTRIBUTES, **bad)


def test_value_weights_draw_each_changed_value_in_proportion(rendered):
    """Shape edits of a scene with one cube, one sphere and one cylinder: with ``{"cube": 4}`` the cube is the one
    changed 4/6 of the time (each object has two other shapes; weights 4, 1, 1), without weights 1/3."""
    from audio_clevrgan.render import SceneObject, random_edit

    base = _scene(rendered)[:3]
    scene = [SceneObject(**{**vars(o), "shape": s}) for o, s in zip(base, ("cube", "sphere", "cylinder"), strict=True)]
    rng = np.random.default_rng(2)
    n = 3000
    weighted = sum(random_edit(scene, rng, None, ("shape",), "attribute", None, {"cube": 4.0})[1].old == "cube"
                   for _ in range(n))
    plain = sum(random_edit(scene, rng, None, ("shape",), "attribute")[1].old == "cube" for _ in range(n))
    assert abs(weighted / n - 4 / 6) < 0.03 and abs(plain / n - 1 / 3) < 0.03, (weighted, plain)
    with pytest.raises(ValueError, match="value_weights"):
        random_edit(scene, rng, None, ("shape",), "attribute", None, {"cube": 0.0})


def test_oracle_value_weights_are_parsed_and_bad_ones_reported_together():
    oracle = RenderedEdits(RenderedEdits.Options(attributes="shape", values="cube:2, sphere:0.5"))
    assert oracle.value_weights == {"cube": 2.0, "sphere": 0.5}
    assert RenderedEdits(RenderedEdits.Options()).value_weights is None
    with pytest.raises(ConfigError) as err:  # red is a colour, and colour edits are not allowed here
        RenderedEdits(RenderedEdits.Options(attributes="shape", values="cube:0,cylinder,red:2,cube:1,ball:2"))
    for bad in ("'cube:0'", "'cylinder'", "'red:2'", "'cube:1'", "'ball:2'"):
        assert bad in str(err.value), (bad, str(err.value))


def test_a_weighted_attribute_without_a_valid_edit_passes_its_turn(rendered, monkeypatch):
    """Shape weighted 100:1, but with every shape change forbidden (monkeypatched placement) every edit is a size."""
    import audio_clevrgan.render as render

    scene = _scene(rendered)
    rng = np.random.default_rng(0)
    monkeypatch.setattr(render, "_placement_holds", lambda new, attribute, cfg: attribute != "shape")
    got = {render.random_edit(scene, rng, render.SCENE_PROFILES["cpu"], ("shape", "size"), "attribute", (100, 1))[1]
           .attribute for _ in range(50)}
    assert got == {"size"}


def test_oracle_several_edits_per_anchor(rendered):
    task = build_task("tiny", options={"data_dir": str(rendered)})
    opts = RenderedEdits.Options(per_anchor=3, balance="attribute")
    out = check_generator(RenderedEdits, task, batch_size=4, options=opts)
    negs = out[0]
    assert negs.inputs.shape == (4, 3, 3, 64, 64) and negs.meta["category"].shape == (4, 3)
    gen = RenderedEdits(opts, seed=0, task=task)
    batch = task.train.batch(torch.arange(4))
    task.model.eval()  # batch statistics would differ between the 12 edits and one
    with torch.no_grad():
        emb = (task.model.encode(0, batch.a), task.model.encode(1, batch.b))
        negs = gen.mine(make_context(task.model.score_matrix(*emb), task=task, embeddings=emb))[0]
        for i in range(4):
            for j in range(3):  # each score is the pair (edit j of anchor i, caption i)
                s = task.model.score_pairs(task.model.encode(0, negs.inputs[i, j][None]), emb[1][torch.tensor([i])])
                assert torch.allclose(s[0], negs.score[i, j], atol=1e-5)
            assert not any(torch.equal(negs.inputs[i, j], batch.a[i]) for j in range(3))


def test_oracle_bad_options_reported_together():
    with pytest.raises(ConfigError) as err:
        RenderedEdits(RenderedEdits.Options(balance="objects", per_anchor=0))
    assert "balance" in str(err.value) and "per_anchor" in str(err.value)
