"""Task options of ``audio-clevrgan`` that change what a batch holds: content groups, cached generated positives."""

from __future__ import annotations

import pytest
import torch

from audio_clevrgan.task import build_task
from negmine.errors import UnknownNameError


def _content(row):
    return tuple(sorted((o["size"], o["color"], o["material"], o["shape"]) for o in row["objects"]))


def test_group_by_content_groups_same_content_pairs_in_training_only(acg_gan):
    task = build_task("tiny", 0, {"data_dir": str(acg_gan), "group_by": "content"})
    rows, groups = task.train.rows, task.train.groups
    for i in range(len(rows)):
        for j in range(len(rows)):
            assert (groups[i] == groups[j]) == (_content(rows[i]) == _content(rows[j]))
    batch = task.train.batch(torch.arange(len(rows)))
    assert torch.equal(batch.groups, groups)
    assert task.val.groups is None and task.test.groups is None  # evaluation keeps one correct item per query
    plain = build_task("tiny", 0, {"data_dir": str(acg_gan)})
    assert plain.train.groups is None
    with pytest.raises(UnknownNameError, match="Did you mean 'content'"):
        build_task("tiny", 0, {"data_dir": str(acg_gan), "group_by": "contents"})


def test_generated_positives_are_computed_once_per_item(acg_gan):
    task = build_task("tiny", 0, {"data_dir": str(acg_gan)})
    split = task.train
    calls = []

    def fn(z):
        calls.append(z.shape[0])
        return z[:, :3, None, None].sigmoid().expand(-1, 3, 64, 64)

    split.use_generated_positives(fn)
    ids = torch.tensor([0, 2, 5])
    first = split.side_batch(0, ids)
    assert calls == [3]
    again = split.side_batch(0, torch.tensor([5, 2, 7]))
    assert calls == [3, 1]  # only item 7 is new
    torch.testing.assert_close(again[:2], first.flip(0)[:2])
    torch.testing.assert_close(first, fn(split.latents[ids]))
    split.use_generated_positives(fn, cache_bytes=0)  # too big to keep: generated for every batch
    calls.clear()
    split.side_batch(0, ids)
    split.side_batch(0, ids)
    assert calls == [3, 3]


def test_edit_generators_take_the_batch_positives_and_decode_them_once(acg_gan):
    """In training, the originals an edit starts from are the batch's generated positives: the GAN's upper layers run
    once per item over the whole run for them (then only for the edits' tries)."""
    import attrs

    from negmine.testing import make_context
    from negmine_gan.random_edit import GanRandomEdits

    task = build_task("tiny", 0, {"data_dir": str(acg_gan)})
    gen = GanRandomEdits(GanRandomEdits.Options(accept=0.0), seed=0, task=task)
    gen.negmine_stage_start(trainer=type("T", (), {"task": task, "device": torch.device("cpu")})(), stage=None)
    editor = gen._editor()
    unedited = []
    generate = editor.generate
    editor.generate = lambda *a, **k: unedited.append(k.get("ablation") is None) or generate(*a, **k)
    ids = torch.arange(8)
    for _ in range(2):
        batch = task.train.batch(ids)
        with torch.no_grad():
            emb = (task.model.encode(0, batch.a), task.model.encode(1, batch.b))
            ctx = attrs.evolve(make_context(task.model.score_matrix(*emb), task=task, embeddings=emb), batch=batch)
        negs = gen.generate(ctx)[0]
    assert unedited.count(True) == 1  # the positives of the first batch; the second batch came from the cache
    assert unedited.count(False) == 2  # one try per step (accept = 0)
    changed = (negs.inputs[:, 0] - batch.a).flatten(1).abs().amax(1)
    assert (changed > 0).any() and negs.valid.all()
