"""``gan-scene-edit``: the oracle of a scene-coded GAN. Each negative is the GAN's drawing of its anchor's scene with
exactly one attribute of one object changed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audio_clevrgan.oracle import GanSceneEdits
from audio_clevrgan.render import edit_scene
from audio_clevrgan.scene_gan import encode_scenes
from audio_clevrgan.task import build_task
from audio_clevrgan.vocab import ATTRIBUTES, VALUES
from negmine.errors import ConfigError, MissingCapabilityError
from negmine.testing import check_generator, make_context, make_task


def test_each_negative_is_the_gan_drawing_one_attribute_of_one_object_changed(acg_gan):
    task = build_task("tiny", options={"data_dir": str(acg_gan)})
    assert {"gan", "latents"} <= task.provides
    out = check_generator(GanSceneEdits, task, batch_size=6)  # contract, determinism, state round trip
    assert out[0].inputs.shape == (6, 1, 3, 64, 64) and out[0].inputs.dtype == torch.float32
    gen = GanSceneEdits(seed=0, task=task)
    batch = task.train.batch(torch.arange(6))
    with torch.no_grad():
        emb = (task.model.encode(0, batch.a), task.model.encode(1, batch.b))
        negs = gen.mine(make_context(task.model.score_matrix(*emb), task=task, embeddings=emb))[0]
    gan = gen.gan()
    z = batch.extras["latent"]
    for i, scene in enumerate(gan.scenes(z)):
        changed = ATTRIBUTES[int(negs.meta["category"][i, 0])]
        # every single-attribute change of that attribute, drawn by the GAN: exactly one is the negative
        cands = [edit_scene(scene, k, changed, v) for k, obj in enumerate(scene) for v in VALUES[changed]
                 if v != getattr(obj, changed)]
        drawn = gen.draw(z[i:i + 1].expand(len(cands), -1), encode_scenes(cands, gan.scene_config.max_objects))
        hits = [torch.allclose(d, negs.inputs[i, 0], atol=1e-5) for d in drawn]
        assert sum(hits) == 1, (i, changed, sum(hits))
        assert not torch.allclose(negs.inputs[i, 0], gen.draw(z[i:i + 1])[0], atol=1e-3)  # the drawing changed


def test_needs_a_scene_coded_gan(acg_gan):
    with pytest.raises(MissingCapabilityError):
        GanSceneEdits.check_requirements(make_task())
    task = build_task("tiny", options={"data_dir": str(acg_gan)})
    task.resources["gan"] = torch.nn.Linear(2, 2)  # a GAN without the scenes it draws
    with pytest.raises(ConfigError, match="scene-coded"):
        GanSceneEdits(seed=0, task=task).gan()
    with pytest.raises(ConfigError, match="balance"):
        GanSceneEdits(GanSceneEdits.Options(balance="objects"))


@pytest.mark.parametrize("balance", ["attribute", "confusion"])
def test_train_with_the_gan_oracle(acg_gan, tmp_path, balance):
    from negmine.cli import main

    run = tmp_path / "run"
    assert main(["train", "--task", "audio-clevrgan", "--profile", "tiny", "--task-option", f"data_dir={acg_gan}",
                 "-n", "random", "-n", "gan-scene-edit", "--gan-scene-edit-balance", balance,
                 *(["--gan-scene-edit-localize", "word"] if balance == "attribute" else []),
                 "--reduction", "mean", "--reduction", "hardest", "--steps", "2", "--batch-size", "8",
                 "--run-dir", str(run), "-q"]) == 0
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in line][-1]
    assert last["gan-scene-edit/side0/count"] == 8
    # localize = "word" (the attribute case): the share of edits compared on a word, read by the task's segmenter
    assert (0 <= last["gan-scene-edit/localized"] <= 1) if balance == "attribute" else "gan-scene-edit/localized" not in last
    shares = [last.get(f"gan-scene-edit/draw_share/{a}") for a in ATTRIBUTES]
    if balance == "confusion":  # the rates and the draw shares are logged with each step
        assert sum(shares) == pytest.approx(1.0) and all(0 <= last[f"gan-scene-edit/confusion/{a}"] <= 1
                                                         for a in ATTRIBUTES)
    else:
        assert shares == [None] * len(ATTRIBUTES)


def test_an_isolated_words_value_is_removed_from_the_gan_scene(acg_gan):
    """With task option isolated_words, an anchor whose caption is one word gets the GAN's drawing of its scene
    with that word's value removed from every object (when the GAN's scene holds it, as the segmenter read it)."""
    from audio_clevrgan.render import remove_value

    task = build_task("tiny", options={"data_dir": str(acg_gan), "isolated_words": 0.6})
    words = task.train.isolated
    ids = torch.arange(len(words))  # the whole split: make_context's batch is its first rows
    assert sum(w is not None for w in words) >= 4
    gen = GanSceneEdits(seed=0, task=task)
    batch = task.train.batch(ids)
    with torch.no_grad():
        emb = (task.model.encode(0, batch.a), task.model.encode(1, batch.b))
        negs = gen.mine(make_context(task.model.score_matrix(*emb), task=task, embeddings=emb))[0]
    gan = gen.gan()
    z = batch.extras["latent"]
    checked = 0
    for k, scene in enumerate(gan.scenes(z)):
        if words[k] is None:
            continue
        attribute, value, _ = words[k]
        if not any(getattr(o, attribute) == value for o in scene):
            continue
        assert ATTRIBUTES[int(negs.meta["category"][k, 0])] == attribute
        drawn = gen.draw(z[k:k + 1], encode_scenes([remove_value(scene, np.random.default_rng(s), attribute, value,
                                                                  gan.scene_config) for s in range(64)],
                                                   gan.scene_config.max_objects))
        # the negative is one of the value's removals (64 draws cover every assignment of a value group this small)
        assert any(torch.allclose(d, negs.inputs[k, 0], atol=1e-5) for d in drawn)
        checked += 1
    assert checked >= 2


def test_confusion_balance_draws_the_attributes_the_model_still_confuses(acg_gan):
    """balance 'confusion': each attribute's running rate of edits scored within the margin of the positive sets
    how often it is drawn; an attribute the model separates fades to the floor, one with no edits keeps its rate,
    one-word anchors' edits do not count, and the rates are in the generator's state (exact resume)."""
    task = build_task("tiny", options={"data_dir": str(acg_gan)})
    options = GanSceneEdits.Options(balance="confusion", confusion_decay=0.5, confusion_floor=0.1)
    check_generator(GanSceneEdits, task, batch_size=6, options=options)  # contract, determinism, state round trip
    gen = GanSceneEdits(options, seed=0, task=task)
    shape, color = ATTRIBUTES.index("shape"), ATTRIBUTES.index("color")
    changed = torch.tensor([[shape], [color], [shape], [color], [color]])
    score = torch.tensor([[1.0], [-5.0], [0.0], [-5.0], [9.0]])  # shape edits within the margin, colour ones not
    edited = torch.tensor([True, True, True, True, False])  # the last anchor's (a one-word anchor's) is ignored
    for _ in range(12):
        gen.observe(changed, score, torch.zeros(5), 0.5, edited)
    rates = dict(zip(ATTRIBUTES, gen.confusion.tolist(), strict=True))
    assert rates["shape"] == 1.0 and rates["color"] < 1e-3 and rates["material"] == rates["size"] == 1.0
    weights = dict(zip(gen.attributes, gen.draw_weights(), strict=True))
    assert weights["shape"] == pytest.approx(1.1) and weights["color"] == pytest.approx(0.1, abs=1e-3)
    restored = GanSceneEdits(options, seed=0, task=task)
    restored.load_state_dict(gen.state_dict())
    assert torch.equal(restored.confusion, gen.confusion)
    # resume: a generator restored after one step draws the second step's edits as the uninterrupted one does
    batch = task.train.batch(torch.arange(8))
    with torch.no_grad():
        emb = (task.model.encode(0, batch.a), task.model.encode(1, batch.b))
    ctx = make_context(task.model.score_matrix(*emb), task=task, embeddings=emb)
    steady = GanSceneEdits(options, seed=3, task=task)
    steady.mine(ctx)
    interrupted = GanSceneEdits(options, seed=3, task=task)
    interrupted.mine(ctx)
    resumed = GanSceneEdits(options, seed=0, task=task)
    resumed.load_state_dict(interrupted.state_dict())
    assert not torch.equal(resumed.confusion, torch.ones(len(ATTRIBUTES), dtype=torch.float64))
    expected, got = steady.mine(ctx)[0], resumed.mine(ctx)[0]
    assert torch.equal(expected.meta["category"], got.meta["category"]) and torch.equal(expected.inputs, got.inputs)
    old = GanSceneEdits(options, seed=0, task=task)
    old.load_state_dict({"rng": gen.state_dict()["rng"]})  # a checkpoint from before the rates existed
    assert torch.equal(old.confusion, torch.ones(len(ATTRIBUTES), dtype=torch.float64))
    weighted = GanSceneEdits(GanSceneEdits.Options(balance="confusion", attributes="shape:2,color:1"), task=task)
    assert weighted.draw_weights() == pytest.approx((2.2, 1.1))
    with pytest.raises(ConfigError) as err:
        GanSceneEdits(GanSceneEdits.Options(balance="confusion", confusion_decay=1.0, confusion_floor=0.0))
    assert "confusion_decay" in str(err.value) and "confusion_floor" in str(err.value)


def test_localize_word_spans_each_edit_on_its_tasks_word_and_word_only_drops_the_rest(acg_gan):
    """Option localize: the oracle asks the task (resource edit_word_spans) where each edit's falsified word lies,
    per edit of each anchor (anchor_span Float[B, K, 2]); an edit without one spans the whole anchor, or is
    dropped with "word-only". The edits themselves are those of localize = "none" (no random draw is added)."""
    task = build_task("tiny", options={"data_dir": str(acg_gan)})
    batch = task.train.batch(torch.arange(6))
    with torch.no_grad():
        emb = (task.model.encode(0, batch.a), task.model.encode(1, batch.b))
    asked = []

    def spans(ids, images):  # a stand-in reader: odd ids name no word, even ones [id / 100, id / 100 + 0.1]
        asked.append((ids.clone(), images.shape))
        out = torch.stack([ids.float() / 100, ids.float() / 100 + 0.1], 1)
        out[ids % 2 == 1] = float("nan")
        return out

    task.resources["edit_word_spans"] = spans

    def mine(localize):
        gen = GanSceneEdits(GanSceneEdits.Options(per_anchor=2, localize=localize), seed=0, task=task)
        return gen, gen.mine(make_context(task.model.score_matrix(*emb), task=task, embeddings=emb))[0]

    _, plain = mine("none")
    gen, word = mine("word")
    _, only = mine("word-only")
    assert torch.equal(plain.inputs, word.inputs) and torch.equal(word.inputs, only.inputs)
    assert "anchor_span" not in plain.meta and word.meta["anchor_span"].shape == (6, 2, 2)
    assert asked[0][0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5] and asked[0][1][0] == 12
    for i in range(6):
        expected = [0.0, 1.0] if i % 2 else [i / 100, i / 100 + 0.1]
        assert word.meta["anchor_span"][i].flatten().tolist() == pytest.approx(expected * 2)
    edited = plain.valid if plain.valid is not None else torch.ones(6, 2, dtype=torch.bool)
    assert torch.equal(word.valid if word.valid is not None else torch.ones(6, 2, dtype=torch.bool), edited)
    assert torch.equal(only.valid, edited & (torch.arange(6) % 2 == 0)[:, None])
    assert gen.localized == pytest.approx(float((torch.arange(6)[:, None].expand(6, 2)[edited] % 2 == 0).float().mean()))
    del task.resources["edit_word_spans"]
    with pytest.raises(ConfigError, match="edit_word_spans"):
        mine("word")
