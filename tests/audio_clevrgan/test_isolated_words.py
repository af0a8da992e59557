"""Isolated words in training (task option ``isolated_words``) and the oracle's negative for them (remove_value)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from audio_clevrgan import dataset as ds
from audio_clevrgan.captions import spoken_words
from audio_clevrgan.oracle import RenderedEdits
from audio_clevrgan.render import edit_scene, remove_value, render_scenes, scene_from_dicts, to_uint8
from audio_clevrgan.task import build_task
from audio_clevrgan.vocab import ATTRIBUTES, VALUES
from negmine.errors import ConfigError, DataError
from negmine.testing import batch_context, make_context


def _scenes(rendered):
    _, rows = ds.read_dataset(rendered)
    return [scene_from_dicts(r["scene"]) for r in rows]


def test_remove_value_changes_exactly_the_holders_of_the_value(acg_rendered):
    checked = 0
    for scene in _scenes(acg_rendered)[:12]:
        for attribute in ATTRIBUTES:
            for value in {getattr(o, attribute) for o in scene}:
                new = remove_value(scene, np.random.default_rng(checked), attribute, value, cfg=None)
                checked += 1
                assert len(new) == len(scene)
                for old, now in zip(scene, new, strict=True):
                    changed = {k for k in vars(old) if getattr(old, k) != getattr(now, k)}
                    if getattr(old, attribute) == value:  # a holder: its value and nothing else replaced
                        assert changed == {attribute} and getattr(now, attribute) in VALUES[attribute]
                    else:
                        assert not changed
                assert all(getattr(o, attribute) != value for o in new)
    assert checked > 40
    scene = _scenes(acg_rendered)[0]
    absent = next(v for v in VALUES["color"] if all(o.color != v for o in scene))
    with pytest.raises(ValueError, match="no object"):
        remove_value(scene, np.random.default_rng(0), "color", absent)


def test_isolated_words_replace_a_share_of_captions(acg_rendered):
    plain = build_task("tiny", options={"data_dir": str(acg_rendered)})
    task = build_task("tiny", seed=0, options={"data_dir": str(acg_rendered), "isolated_words": 0.5})
    again = build_task("tiny", seed=3, options={"data_dir": str(acg_rendered), "isolated_words": 0.5})
    words = task.train.isolated
    replaced = [i for i, w in enumerate(words) if w is not None]
    assert 0.25 < len(replaced) / len(words) < 0.75
    assert again.train.isolated == words  # drawn from the dataset's seed, not the run's
    assert torch.equal(again.train.feats, task.train.feats)
    for i, row in enumerate(task.train.rows):
        same = torch.equal(task.train.feats[i], plain.train.feats[i])
        if words[i] is None:
            assert same
            continue
        attribute, value, word = words[i]
        assert not same and task.train.nframes[i] < plain.train.nframes[i]  # one word is shorter than a caption
        assert any(o[attribute] == value for o in row["objects"]) and word in spoken_words(attribute, value)
    assert {w[0] for w in words if w} == set(ATTRIBUTES)
    # a word the Table 1 test also speaks is never its recording: the speaker's rate and pitch are shifted
    canonical = [i for i in replaced if words[i][2] == words[i][1]]
    assert canonical
    for i in canonical:
        test_word = ds.load_features(acg_rendered / f"semantic/{words[i][2]}-{task.train.rows[i]['speaker']}.wav")
        n = int(task.train.nframes[i])
        assert test_word.shape[1] != n or not torch.allclose(test_word.half(), task.train.feats[i, :, :n])
    with pytest.raises(DataError, match="isolated_words"):
        build_task("tiny", options={"data_dir": str(acg_rendered), "isolated_words": 1.5})


def test_the_oracle_removes_an_isolated_words_value(acg_rendered):
    """An anchor whose caption is one word gets its scene without that value (a one-attribute edit of a random
    object would mostly leave the word true: a false negative); the other anchors keep one-attribute edits."""
    task = build_task("tiny", options={"data_dir": str(acg_rendered), "isolated_words": 0.5})
    words = task.train.isolated
    ids = torch.arange(len(words))
    gen = RenderedEdits(seed=0, task=task)
    batch = task.train.batch(ids)
    with torch.no_grad():
        emb = (task.model.encode(0, batch.a), task.model.encode(1, batch.b))
        negs = gen.mine(make_context(task.model.score_matrix(*emb), task=task, embeddings=emb))[0]
    checked = 0
    for i, word in enumerate(words):
        if word is None:
            continue
        attribute, value, _ = word
        assert ATTRIBUTES[int(negs.meta["category"][i, 0])] == attribute
        scene = scene_from_dicts(task.train.scenes[i])
        holders = [k for k, o in enumerate(scene) if getattr(o, attribute) == value]
        others = [v for v in VALUES[attribute] if v != value]
        if len(others) ** len(holders) > 64:
            continue
        hits = 0  # brute force: exactly one assignment of other values to the holders re-renders the negative
        for values in itertools.product(others, repeat=len(holders)):
            new = scene
            for k, v in zip(holders, values, strict=True):
                new = edit_scene(new, k, attribute, v)
            img = torch.from_numpy(to_uint8(render_scenes([new], resolution=64).images)[0]).permute(2, 0, 1)
            hits += int(torch.equal(img, negs.inputs[i, 0]))
        assert hits == 1
        checked += 1
    assert checked >= 5


def test_exclude_true_words_marks_exactly_the_pairs_where_a_word_is_true_of_the_other_image(acg_rendered):
    task = build_task("tiny", options={"data_dir": str(acg_rendered), "isolated_words": 0.5,
                                       "exclude_true_words": "true"})
    train = task.train
    n = len(train.rows)

    def true_of(i, j):  # pair i's one word names a value some object of image j holds
        word = train.isolated[i]
        return word is not None and any(o[word[0]] == word[1] for o in train.rows[j]["objects"])

    expected = torch.tensor([[true_of(i, j) or true_of(j, i) for j in range(n)] for i in range(n)])
    ids = torch.arange(n)
    assert torch.equal(train.false_negatives(ids, ids), expected)
    assert 0 < int(expected.sum()) < n * n
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: n // 2]
    assert torch.equal(train.false_negatives(perm, ids), expected[perm])
    ctx = batch_context(task, perm)  # what generators see: the marked pairs are excluded with the ids
    assert torch.equal(ctx.exclude, expected[perm][:, perm] | (perm[:, None] == perm[None, :]))
    off = build_task("tiny", options={"data_dir": str(acg_rendered), "isolated_words": 0.5})
    assert off.train.false_negatives(ids, ids) is None  # the default changes nothing
    with pytest.raises(DataError, match="needs isolated_words"):
        build_task("tiny", options={"data_dir": str(acg_rendered), "exclude_true_words": True})
    with pytest.raises(DataError, match="exclude_true_words"):
        build_task("tiny", options={"data_dir": str(acg_rendered), "isolated_words": 0.5, "exclude_true_words": "maybe"})


def test_caption_still_true_reads_one_word_and_full_captions(acg_gan):
    """The task's reader of generated negatives (resource caption_still_true, for drop_still_true): a pair's own
    image still fits its caption; an image without the word's value, or with nothing in it, does not."""
    task = build_task("tiny", options={"data_dir": str(acg_gan), "isolated_words": 0.5, "still_true_captions": True})
    train = task.train
    check = task.resources["caption_still_true"]
    one_word = [i for i, w in enumerate(train.isolated) if w is not None]
    full = [i for i, w in enumerate(train.isolated) if w is None and train.rows[i]["objects"]]
    assert one_word and full
    ids = torch.tensor(one_word + full)
    own = train.batch(ids).a.float() / 255  # the pairs' own images, in [0, 1]
    describe = task.resources["describe_images"]
    readings = describe(own)
    fits = check(ids, own)
    assert fits.dtype == torch.bool and fits.shape == (len(ids),)
    assert torch.equal(check(ids, train.batch(ids).a), fits)  # stored uint8 images read alike
    for k, i in enumerate(ids.tolist()):  # brute force from the segmenter's readings
        if train.isolated[i] is not None:
            attribute, value, _ = train.isolated[i]
            assert bool(fits[k]) == any(o[attribute] == value for o in readings[k])
    assert fits[: len(one_word)].float().mean() > 0.5  # the word was read in this very image when it was chosen
    assert fits[len(one_word):].float().mean() > 0.5  # ... and the caption's objects
    # another pair's image: a full caption no longer fits it (other objects)
    others = own[len(one_word):].roll(1, 0)
    assert not check(ids[len(one_word):], others).any()
    # a one-word claim of a value the image does not hold is not true of it
    i = one_word[0]
    attribute = train.isolated[i][0]
    held = {o[attribute] for o in readings[0]}
    absent = next(v for v in VALUES[attribute] if v not in held)
    train.isolated[i] = (attribute, absent, absent)
    assert not bool(check(torch.tensor([i]), own[:1])[0])


def test_caption_still_true_reads_only_one_word_captions_by_default(acg_gan):
    task = build_task("tiny", options={"data_dir": str(acg_gan), "isolated_words": 0.5})
    both = build_task("tiny", options={"data_dir": str(acg_gan), "isolated_words": 0.5, "still_true_captions": True})
    ids = torch.arange(len(task.train))
    images = task.train.batch(ids).a
    one_word = torch.tensor([w is not None for w in task.train.isolated])
    words_only, everything = task.resources["caption_still_true"](ids, images), both.resources["caption_still_true"](
        ids, images)
    assert not words_only[~one_word].any() and everything[~one_word].any()  # full captions are read only on request
    assert torch.equal(words_only[one_word], everything[one_word])
    with pytest.raises(DataError, match="still_true_captions"):
        build_task("tiny", options={"data_dir": str(acg_gan), "still_true_captions": "maybe"})


def test_edit_changes_reads_what_the_segmenter_sees_changed(acg_gan):
    """The task's reader for keep_changes (resource edit_changes): a pair's own image changes nothing; another pair's
    image changes what the segmenter reads differently, by brute force from describe_change on its readings."""
    from negmine_gan.export import describe_change

    task = build_task("tiny", options={"data_dir": str(acg_gan)})
    train, read = task.train, task.resources["edit_changes"]
    assert set(task.resources["edit_change_kinds"]) == {"shape", "color", "material", "size", "removed", "added"}
    ids = torch.tensor([i for i in range(len(train)) if train.rows[i]["objects"]][:6])
    own = train.batch(ids).a
    readings = task.resources["describe_images"](own.float() / 255)
    changes = read(ids, own)
    assert len(changes) == len(ids) and all(isinstance(c, tuple) for c in changes)
    others = own.roll(1, 0)
    moved = read(ids, others)
    other_readings = readings[-1:] + readings[:-1]
    for k, i in enumerate(ids.tolist()):
        for image_reading, got in ((readings[k], changes[k]), (other_readings[k], moved[k])):
            expected = tuple(c.get("attribute") or c["change"] for c in describe_change(train.rows[i]["objects"],
                                                                                         image_reading)["changes"])
            assert got == expected and set(got) <= set(task.resources["edit_change_kinds"])
    assert sum(not c for c in changes) > sum(not c for c in moved)  # own images mostly read unchanged; others not
    assert read(ids, own.float() / 255) == changes  # stored uint8 images read alike


def test_the_describer_reads_each_image_once_across_two_questions_of_one_step(acg_gan, monkeypatch):
    """drop_still_true and keep_changes ask the segmenter about the same edits through two resources: the second
    question reads only the images the first did not, and every answer equals a fresh reading (brute force)."""
    task = build_task("tiny", options={"data_dir": str(acg_gan)})
    describe = task.resources["describe_images"]
    images = task.train.batch(torch.arange(8)).a.float() / 255
    fresh = describe(images)
    read_counts = []
    real = ds.describe_images
    monkeypatch.setattr(ds, "describe_images", lambda seg, x: (read_counts.append(len(x)), real(seg, x))[1])
    assert describe(images[[1, 3]].clone()) == [fresh[1], fresh[3]] and read_counts == []  # remembered from the last call
    assert describe(images[[3, 1, 0]]) == [fresh[3], fresh[1], fresh[0]] and read_counts == [1]  # only image 0 is new
    assert describe(images[4:]) == fresh[4:] and read_counts == [1, 4]  # only the previous call is remembered
    assert describe(images[:2]) == fresh[:2] and read_counts == [1, 4, 2]
    changed = images[:1].clone()
    changed[0, 0, 0, 0] = 1 - changed[0, 0, 0, 0]  # one pixel differs: read again
    describe(changed)
    assert read_counts == [1, 4, 2, 1]
    first = describe(images[:1])
    assert first[0], "the first image has objects to change"
    for o in first[0]:
        o["shape"] = "changed by the caller"
    assert describe(images[:1]) == fresh[:1]  # the memo hands out copies


def test_the_describer_reads_what_the_segmenter_in_its_default_layout_reads(acg_gan):
    """The training-time describer runs the segmenter channels-last (faster on the CPU): the objects and the value
    maps it reads are those of the builder's default-layout segmenter (brute force over a batch)."""
    from audio_clevrgan.train_scripts import load_segmenter

    task = build_task("tiny", options={"data_dir": str(acg_gan)})
    images = (task.train.batch(torch.arange(8)).a.float() / 255).contiguous()
    plain = load_segmenter(acg_gan / "segmenter.pt")
    assert plain.enc[0][0][0].weight.is_contiguous()  # the builder's layout
    objects = task.resources["describe_images"](images)
    expected = ds.describe_images(plain, images)[0]
    assert sum(map(len, expected)) > 0
    strip = [[[{k: v for k, v in o.items() if k != "confidence"} for o in image] for image in read]
             for read in (objects, expected)]
    assert strip[0] == strip[1]
    for got, want in zip(objects, expected, strict=True):
        assert all(abs(o["confidence"] - p["confidence"]) <= 1e-3 for o, p in zip(got, want, strict=True))
    names, maps = task.resources["concept_maps"](images)
    want_names, want_maps = ds.concept_maps(plain, images)
    assert names == want_names and torch.equal(maps, want_maps)


@pytest.mark.parametrize("anchors", ["isolated", "sentences"])
def test_the_oracle_edits_only_the_chosen_kind_of_anchor(acg_rendered, anchors):
    """Option anchors: the valid anchors are exactly the one-word ones ('isolated') or exactly the others
    ('sentences'), per_anchor edits each; the edits themselves are those of anchors='all' on the same seed."""
    task = build_task("tiny", options={"data_dir": str(acg_rendered), "isolated_words": 0.5})
    words = task.train.isolated
    isolated = torch.tensor([w is not None for w in words])
    assert 0 < int(isolated.sum()) < len(words)
    batch = task.train.batch(torch.arange(len(words)))
    with torch.no_grad():
        emb = (task.model.encode(0, batch.a), task.model.encode(1, batch.b))
    ctx = make_context(task.model.score_matrix(*emb), task=task, embeddings=emb)
    chosen = RenderedEdits(RenderedEdits.Options(anchors=anchors, per_anchor=2), seed=3, task=task).mine(ctx)[0]
    every = RenderedEdits(RenderedEdits.Options(per_anchor=2), seed=3, task=task).mine(ctx)[0]
    expected = isolated if anchors == "isolated" else ~isolated
    assert torch.equal(chosen.valid, expected[:, None].expand(len(words), 2))
    assert every.valid.all()
    assert torch.equal(chosen.inputs, every.inputs) and torch.equal(chosen.meta["category"], every.meta["category"])


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_the_oracles_edit_fraction_counts_that_share_of_anchors_with_the_same_edits(acg_rendered, fraction):
    """Option edit_fraction: each step round(fraction * B) anchors' edits count, a different draw each step, and
    with anchors='isolated' only the one-word anchors among them; the edits themselves, and the next step's edits,
    are those of edit_fraction = 1 (the share is drawn after the edits, from the generator's stream)."""
    task = build_task("tiny", options={"data_dir": str(acg_rendered), "isolated_words": 0.5})
    words = task.train.isolated
    isolated = torch.tensor([w is not None for w in words])
    b = len(words)
    batch = task.train.batch(torch.arange(b))
    with torch.no_grad():
        emb = (task.model.encode(0, batch.a), task.model.encode(1, batch.b))
    ctx = make_context(task.model.score_matrix(*emb), task=task, embeddings=emb)
    every = RenderedEdits(RenderedEdits.Options(per_anchor=2), seed=3, task=task)
    part = RenderedEdits(RenderedEdits.Options(per_anchor=2, edit_fraction=fraction), seed=3, task=task)
    both = RenderedEdits(RenderedEdits.Options(per_anchor=2, edit_fraction=fraction, anchors="isolated"), seed=3,
                         task=task)
    first = [gen.mine(ctx)[0] for gen in (every, part, both)]
    chosen = first[1].valid[:, 0]
    assert int(chosen.sum()) == max(1, round(fraction * b))
    assert torch.equal(first[1].valid, chosen[:, None].expand(b, 2))  # an anchor's edits count together
    assert torch.equal(first[2].valid[:, 0], chosen & isolated)  # the same draw, narrowed to one-word anchors
    for got in first[1:]:
        assert torch.equal(got.inputs, first[0].inputs) and torch.equal(got.meta["category"], first[0].meta["category"])
    second = [gen.mine(ctx)[0] for gen in (every, part)]
    assert not torch.equal(second[1].valid[:, 0], chosen)  # drawn anew
    assert torch.equal(second[1].inputs, second[0].inputs)  # the second step's edits: the share drew after them


def test_the_oracle_rejects_an_unknown_anchor_kind():
    with pytest.raises(ConfigError, match="anchors.*'isolated'"):
        RenderedEdits(RenderedEdits.Options(anchors="words"))


def test_an_anchor_without_a_valid_edit_gets_no_negative_and_training_goes_on(acg_rendered, monkeypatch):
    """A scene with no valid edit of the allowed attributes (render.random_edit raises, as it does when every shape
    change would hide a neighbour under attributes = "shape") leaves that anchor's edit invalid, with attribute -1;
    every other anchor keeps its edit."""
    import audio_clevrgan.render as render

    task = build_task("tiny", options={"data_dir": str(acg_rendered)})
    n = len(task.train)
    batch = task.train.batch(torch.arange(n))
    with torch.no_grad():
        emb = (task.model.encode(0, batch.a), task.model.encode(1, batch.b))
    ctx = make_context(task.model.score_matrix(*emb), task=task, embeddings=emb)
    real, calls = render.random_edit, itertools.count()

    def every_third_fails(*args, **kwargs):
        if next(calls) % 3 == 0:
            raise render.NoValidEdit("no valid single-attribute edit for this scene")
        return real(*args, **kwargs)

    monkeypatch.setattr(render, "random_edit", every_third_fails)
    negatives = RenderedEdits(RenderedEdits.Options(attributes="shape"), seed=3, task=task).mine(ctx)[0]
    failed = torch.arange(n) % 3 == 0
    assert torch.equal(negatives.valid[:, 0], ~failed)
    assert (negatives.meta["category"][failed] == -1).all()
    assert (negatives.meta["category"][~failed] == ATTRIBUTES.index("shape")).all()


def test_concept_maps_are_the_segmenters_values_and_find_the_factored_gans_value_groups(acg_gan):
    """The task's concepts for gan-targeted's concepts = "task" (resource concept_maps): every attribute value, where
    the segmenter reads it (brute force: the per-value pixel counts of describe_images). Dissected against them, the
    committed attribute-factored generator's units specific to cube, cylinder, metal and each colour but gray are
    exactly that value's unit group, and the default values (sphere, gray, rubber), which no unit draws, are dropped."""
    from audio_clevrgan.scene_gan import factored_unit_roles
    from audio_clevrgan.train_scripts import load_segmenter
    from negmine_gan.targeted import GanTargetedEdits

    task = build_task("tiny", options={"data_dir": str(acg_gan)})
    images = task.train.batch(torch.arange(6)).a.float() / 255
    names, maps = task.resources["concept_maps"](images)
    assert names == [v for a in ATTRIBUTES for v in VALUES[a]]
    assert maps.dtype == torch.bool and maps.shape == (6, len(names), *images.shape[-2:])
    _, pixels = ds.describe_images(load_segmenter(acg_gan / "segmenter.pt"), images)
    for i in range(6):
        assert {v: int(maps[i, k].sum()) for k, v in enumerate(names)} == pixels[i]
    gen = GanTargetedEdits(GanTargetedEdits.Options(concepts="task", dissect_samples=256), seed=0, task=task)
    gen.refresh(task.model, task.train, torch.device("cpu"), 0)
    found = gen.task_concepts
    assert {"sphere", "gray", "rubber"} <= set(found.dropped)
    assert {"cube", "cylinder", "metal", "red", "blue", "green", "yellow"} <= set(found.names)
    layer = gen._editor().features(torch.zeros(1, 128)).shape[1]
    roles = factored_unit_roles(layer, task.resources["gan_loader"]().layer1.units)
    for k, name in enumerate(found.names):
        if name in ("large", "small"):  # size has no unit group: its units draw geometry
            continue
        top = {roles[u] for u in found.ranking[k, :8].tolist()}
        assert top == {f"{next(a for a in ATTRIBUTES if name in VALUES[a])}={name}"}, (name, top)
        specific = {roles[u] for u in found.ranking[k, :int(found.sizes[k])].tolist()}
        assert 1 <= int(found.sizes[k]) <= 8 and specific == top, name  # no unit beyond the group is specific


def test_edit_word_spans_name_the_falsified_word_where_there_is_one(acg_gan):
    """The task's reader for localize = "word" (resource edit_word_spans): an edit read as one object's one
    attribute changed spans the caption word naming the old value in that object's description, in fractions
    of the pair's audio frames; an edit read unchanged spans nothing (NaN). Brute force from the word frames
    espeak-ng gives and the phrases' owners (tested against the caption generator in test_captions.py)."""
    import copy
    import math

    from audio_clevrgan.captions import attribute_word_owners
    from audio_clevrgan.word_frames import attribute_word_frames

    task = build_task("tiny", options={"data_dir": str(acg_gan)})
    train = task.train
    ids = torch.tensor([i for i in range(len(train)) if train.rows[i]["objects"]][:8])
    images = train.batch(ids).a
    changed = {}  # per pair: the objects as read, its first object's colour changed

    def describe(_images):  # a stand-in segmenter: odd positions read unchanged, even ones with one colour changed
        out = []
        for k, i in enumerate(ids.tolist()):
            objects = copy.deepcopy(train.rows[i]["objects"])
            if k % 2 == 0:
                objects[0]["color"] = "cyan" if objects[0]["color"] != "cyan" else "red"
                changed[i] = train.rows[i]["objects"][0]["color"]
            out.append(objects)
        return out

    spans = train.edit_word_spans(ids, images, describe)
    assert spans.shape == (len(ids), 2)
    for k, i in enumerate(ids.tolist()):
        row = train.rows[i]
        if k % 2:
            assert spans[k].isnan().all()
            continue
        frames = attribute_word_frames(row["caption"], row["speaker"])
        owners = attribute_word_owners(row["caption"], row["objects"])
        named = [(lo, hi) for (a, v, lo, hi), owner in zip(frames, owners, strict=True)
                 if (a, v, owner) == ("color", changed[i], 0)]
        length = int(train.nframes[i])
        if not named or named[0][0] >= length:
            assert spans[k].isnan().all(), (row["caption"], named)
            continue
        assert spans[k].tolist() == pytest.approx([named[0][0] / length, min(named[0][1], length) / length])
        assert 0 <= spans[k, 0] < spans[k, 1] <= 1 and not math.isnan(float(spans[k, 0]))
    assert (~spans.isnan().any(1)).sum() >= 1  # some caption names its first object's colour within the crop
    assert task.resources["edit_word_spans"](ids[:1], images[:1]).shape == (1, 2)


def test_edit_word_spans_give_a_one_word_caption_the_whole_anchor_where_its_word_is_falsified(acg_gan):
    """A one-word caption is its word: an edit that leaves no object with the word's value spans the whole anchor
    (0, 1), so localize = "word-only" keeps it; an edit in which some object still holds it spans nothing (NaN)."""
    import copy

    task = build_task("tiny", options={"data_dir": str(acg_gan), "isolated_words": 0.5})
    train = task.train
    ids = torch.tensor([i for i, w in enumerate(train.isolated) if w is not None and train.rows[i]["objects"]][:4])
    assert len(ids) >= 2
    images = train.batch(ids).a

    def describe(_images):  # a stand-in segmenter: even positions lose the word's value everywhere, odd keep it
        out = []
        for k, i in enumerate(ids.tolist()):
            attribute, value, _ = train.isolated[i]
            objects = copy.deepcopy(train.rows[i]["objects"])
            if k % 2 == 0:
                for o in objects:
                    if o[attribute] == value:
                        o[attribute] = next(v for v in VALUES[attribute] if v != value)
            else:
                objects[0][attribute] = value
            out.append(objects)
        return out

    spans = train.edit_word_spans(ids, images, describe)
    for k in range(len(ids)):
        assert spans[k].tolist() == [0.0, 1.0] if k % 2 == 0 else spans[k].isnan().all(), (k, spans[k])


def test_split_resources_read_edits_against_their_own_splits_pairs(acg_gan):
    """negmine edits export --split test rebinds the readers of edits to the test split: a test pair's own image
    reads as that pair's objects there; the training readers would compare it with the training pair of that id."""
    from negmine_gan.export import describe_change

    task = build_task("tiny", options={"data_dir": str(acg_gan)})
    test = task.test
    ids = torch.arange(min(6, len(test)))
    own = test.batch(ids).a
    readings = task.resources["describe_images"](own.float() / 255)
    for name, split in (("test", test), ("train", task.train)):
        read = task.resources["split_resources"](name)["edit_changes"] if name == "test" else task.resources[
            "edit_changes"]
        got = read(ids, own)
        expected = [tuple(c.get("attribute") or c["change"] for c in describe_change(
            split.rows[i]["objects"], readings[k])["changes"]) for k, i in enumerate(ids.tolist())]
        assert got == expected
    assert task.resources["split_resources"]("test")["edit_changes"](ids, own) != task.resources["edit_changes"](ids, own)
