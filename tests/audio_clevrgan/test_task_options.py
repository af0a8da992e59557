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
