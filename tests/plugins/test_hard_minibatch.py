"""hard-minibatch against brute-force loops (the oracle tests)."""

import pytest
import torch

from negmine.testing import make_context
from negmine_hard_minibatch.generator import HardMinibatch


def options(**kw):
    return HardMinibatch.Options(**kw)


def brute_hardest(s, exclude, k):
    out = []
    for i in range(s.shape[0]):
        cands = sorted(((float(s[i, j]), j) for j in range(s.shape[1]) if not exclude[i, j]), reverse=True)
        out.append([j for _, j in cands[:k]])
    return out


@pytest.mark.parametrize("k", [1, 3])
def test_hardest_equals_brute_force(k):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(32, 32, generator=g)
    groups = torch.arange(32) // 2  # pairs of items share a group
    ctx = make_context(s, groups=groups)
    negs = HardMinibatch(options(k=k)).generate(ctx)
    for side in (0, 1):
        want = brute_hardest(ctx.scores[side], ctx.exclude, k)
        assert negs[side].index.tolist() == want
        assert negs[side].valid.all()
        torch.testing.assert_close(negs[side].score, ctx.scores[side].gather(1, negs[side].index))


def test_never_returns_same_group():
    s = torch.zeros(8, 8)
    s[0, 1] = 10.0  # the best-scoring candidate of anchor 0 shares its group
    ctx = make_context(s, groups=torch.tensor([0, 0, 1, 2, 3, 4, 5, 6]))
    negs = HardMinibatch(options()).generate(ctx)
    assert negs[1].index[0, 0] != 1


def test_semihard_window():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(20, 20, generator=g)
    ctx = make_context(s, margin=0.5)
    negs = HardMinibatch(options(strategy="semihard")).generate(ctx)
    pos = ctx.positive_scores
    for side in (0, 1):
        for i in range(20):
            sc = ctx.scores[side][i]
            window = [j for j in range(20) if j != i and pos[i] - 0.5 < sc[j] < pos[i]]
            if window:
                best = max(window, key=lambda j: float(sc[j]))
                assert negs[side].valid[i, 0] and negs[side].index[i, 0] == best
            else:
                assert not negs[side].valid[i, 0]


def test_rank_window_and_min_gap():
    s = torch.arange(100, dtype=torch.float).view(10, 10).flip(1).clone()  # row i: column 0 best ... 9 worst
    s.fill_diagonal_(50.0)
    ctx = make_context(s)
    negs = HardMinibatch(options(rank_min=2, rank_max=4, k=2, sides="b")).generate(ctx)
    assert set(negs) == {1}
    for i in range(10):
        order = [j for j in range(10) if j != i]  # descending score == ascending column index
        assert negs[1].index[i].tolist() == order[2:4]
    gap = HardMinibatch(options(min_gap=0.0, sides="b")).generate(ctx)
    assert (gap[1].score[gap[1].valid] <= 50.0).all()


def test_sample_stays_in_top_k_and_is_seeded():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(16, 16, generator=g)
    ctx = make_context(s)
    first = HardMinibatch(options(strategy="sample", top_k=3, k=2), seed=5).generate(ctx)
    again = HardMinibatch(options(strategy="sample", top_k=3, k=2), seed=5).generate(ctx)
    assert torch.equal(first[0].index, again[0].index)
    top3 = ctx.scores[0].masked_fill(ctx.exclude, float("-inf")).topk(3, dim=1).indices
    for i in range(16):
        assert set(first[0].index[i].tolist()) <= set(top3[i].tolist())
        assert len(set(first[0].index[i].tolist())) == 2
    hot = HardMinibatch(options(strategy="sample", top_k=3, temperature=0.1), seed=5).generate(ctx)
    assert hot[0].valid.all()
