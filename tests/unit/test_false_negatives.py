"""Pairs the data marks as false negatives (``PairedDataset.false_negatives``): excluded by every helper of the
mining context, by the shipped generators and by the trainer, exactly where a brute-force loop says."""

import json

import pytest
import torch

from negmine import Task, TensorPairs, Trainer
from negmine.errors import PluginError
from negmine.generator import split_false_negatives
from negmine.model import shared_labels
from negmine.plugins import get_plugin_manager
from negmine.testing import VectorModel, batch_context
from negmine.trainer import mining_context
from negmine_faiss.generator import FaissNegatives
from negmine_hard_minibatch.generator import HardMinibatch
from negmine_random.generator import RandomNegatives

CPU = torch.device("cpu")


def labelled_task(n=48, seed=0, groups=None, share=0.2):
    """A vector task whose items hold random labels (each label held by about ``share`` of them)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.rand(n, 5, generator=g) < share
    data = TensorPairs(torch.randn(n, 6, generator=g), torch.randn(n, 5, generator=g), groups=groups, labels=labels)
    return Task("labelled", VectorModel(), data, data, provides=frozenset({"corpus"}))


def brute_force(task, ids, cand_ids):
    """Bool[B, N] by loops: the same id, the same group, or a shared label."""
    data = task.train
    groups = data.groups if data.groups is not None else torch.arange(len(data))
    out = torch.zeros(len(ids), len(cand_ids), dtype=torch.bool)
    for i, a in enumerate(ids.tolist()):
        for j, c in enumerate(cand_ids.tolist()):
            shared = bool((data.labels[a] & data.labels[c]).any())
            out[i, j] = a == c or bool(groups[a] == groups[c]) or shared
    return out


def trainer_context(task, ids):
    """The context Trainer._train_step builds in one process (side a a transposed view, no mask given)."""
    batch = task.train.batch(ids)
    with torch.no_grad():
        ea, eb = task.model.encode(0, batch.a), task.model.encode(1, batch.b)
        s = task.model.score_matrix(ea, eb)
    return mining_context(batch, (ea, eb), (ea, eb), (s.T, s), torch.arange(len(ids)), batch.ids,
                          batch.group_ids, task.model, task, 0, 1.0, CPU)


def test_tensor_pairs_marks_the_pairs_sharing_a_label():
    task = labelled_task()
    ids, cand = torch.tensor([3, 0, 17, 40]), torch.arange(48)
    labels = task.train.labels
    expected = torch.tensor([[bool((labels[a] & labels[c]).any()) for c in cand.tolist()] for a in ids.tolist()])
    marked = task.train.false_negatives(ids, cand)
    assert torch.equal(marked, expected)
    assert 0 < int(marked.sum()) < marked.numel()  # the test data has both kinds of pair


@pytest.mark.parametrize("density", [0.0, 0.02, 0.3, 0.9])
def test_shared_labels_sparse_join_and_dense_product_agree_with_brute_force(density):
    # sparse labels take the join on the label, dense ones (more matches than pairs) the product: both must be exact
    gen = torch.Generator().manual_seed(int(density * 100))
    labels = torch.rand(30, 12, generator=gen) < density
    cand = torch.rand(45, 12, generator=gen) < density
    expected = torch.tensor([[bool((labels[i] & cand[j]).any()) for j in range(45)] for i in range(30)])
    assert torch.equal(shared_labels(labels, cand), expected)


@pytest.mark.parametrize("with_groups", [False, True])
def test_every_exclusion_helper_matches_brute_force(with_groups):
    groups = torch.arange(48) // 3 if with_groups else None
    task = labelled_task(groups=groups)
    ids = torch.randperm(48, generator=torch.Generator().manual_seed(1))[:20]
    ctx = trainer_context(task, ids)
    expected = brute_force(task, ids, ids)
    assert ctx.false_negatives is not None
    assert torch.equal(ctx.exclude, expected)
    rows, cols = ctx.excluded_pairs()
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == set(map(tuple, expected.nonzero().tolist()))
    index = torch.randint(0, 20, (20, 7), generator=torch.Generator().manual_seed(2))
    assert torch.equal(ctx.excluded_at(index), expected.gather(1, index))
    for side in (0, 1):
        for keep_layout in (False, True):
            want = ctx.scores[side].contiguous().masked_fill(expected, float("-inf"))
            assert torch.equal(ctx.masked_scores(side, keep_layout=keep_layout), want)


def test_a_given_mask_and_false_negatives_are_both_excluded():
    task = labelled_task()
    ctx = batch_context(task, torch.arange(16))  # passes the given id mask and the split's false negatives
    expected = brute_force(task, torch.arange(16), torch.arange(16))
    assert torch.equal(ctx.exclude, expected)
    assert torch.equal(ctx.masked_scores(1), ctx.scores[1].masked_fill(expected, float("-inf")))
    assert torch.equal(ctx.excluded_at(torch.arange(16).expand(16, 16)), expected)


def test_random_and_hard_minibatch_never_pick_a_marked_pair_and_random_draws_all_others():
    task = labelled_task(n=32)
    ids = torch.arange(32)
    ctx = trainer_context(task, ids)
    expected = brute_force(task, ids, ids)
    out = RandomNegatives(RandomNegatives.Options(k=32), seed=0).generate(ctx)
    for side, negs in out.items():
        picked = torch.zeros(32, 32, dtype=torch.bool)
        for i in range(32):
            picked[i, negs.index[i][negs.valid[i]]] = True
        assert torch.equal(picked, ~expected), side  # every allowed candidate, no marked one
    hard = HardMinibatch(HardMinibatch.Options(k=3), seed=0).generate(ctx)
    for side, negs in hard.items():
        assert not expected.gather(1, negs.index)[negs.valid].any()
        masked = ctx.scores[side].masked_fill(expected, float("-inf"))
        top = masked.topk(3, dim=1)
        assert torch.equal(negs.valid, top.values > float("-inf"))
        assert torch.equal(negs.index[negs.valid], top.indices[negs.valid])


def test_faiss_drops_marked_corpus_items():
    task = labelled_task(n=64)
    ids = torch.arange(8, 24)
    ctx = batch_context(task, ids)
    expected = brute_force(task, ids, torch.arange(64))
    out = FaissNegatives(FaissNegatives.Options(k=64, candidates=64)).generate(ctx)
    for side, negs in out.items():
        kept = torch.zeros(16, 64, dtype=torch.bool)
        for i in range(16):
            kept[i, negs.index[i][negs.valid[i]]] = True
        assert torch.equal(kept, ~expected), side  # the whole corpus but the marked items and the anchor


def test_the_trainer_counts_only_unmarked_impostors(tmp_path):
    task = labelled_task(n=32)
    run = tmp_path / "run"
    Trainer(task, {"steps": 1, "batch_size": 32, "negatives": ["random"], "generators": {"random": {"k": 32}},
                   "log_every": 1, "eval_size": 8, "device": "cpu"},
            plugins=get_plugin_manager(), run_dir=str(run), reporter=None).fit()
    row = next(json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in line)
    allowed = int((~brute_force(task, torch.arange(32), torch.arange(32))).sum())  # the whole split is the batch
    assert row["random/side0/count"] == row["random/side1/count"] == allowed


def test_a_malformed_answer_is_named():
    class Wrong(TensorPairs):
        def false_negatives(self, ids, candidate_ids):
            return torch.zeros(len(ids), len(candidate_ids) + 1, dtype=torch.bool)

    data = Wrong(torch.zeros(4, 6), torch.zeros(4, 5))
    with pytest.raises(PluginError, match=r"Wrong.false_negatives: expected Bool\[4, 4\]"):
        split_false_negatives(data, torch.arange(4), torch.arange(4))
    assert split_false_negatives(TensorPairs(torch.zeros(4, 6), torch.zeros(4, 5)), torch.arange(4),
                                 torch.arange(4)) is None
    with pytest.raises(ValueError, match="labels"):
        TensorPairs(torch.zeros(4, 6), torch.zeros(4, 5), labels=torch.zeros(3, 2))
