"""In-batch mining without B x N masks: the same negatives, bit for bit, as the masked-copy implementation it replaced.

The reference functions below are the previous implementation of ``hard-minibatch`` and ``random`` (a B x N
exclusion mask, inverted and applied with ``masked_fill`` to the contiguous scores); the tests compare indices and
scores exactly, on scores with many ties, with groups, and on contexts shaped like a rank of a torchrun job.
"""

import pytest
import torch

from negmine.errors import PluginError
from negmine.generator import MiningContext, NegativeGenerator, Negatives
from negmine.model import Batch
from negmine.testing import make_task
from negmine.trainer import mining_context
from negmine_hard_minibatch.generator import HardMinibatch, first_max, rank_desc
from negmine_random.generator import RandomNegatives

NEG_INF = float("-inf")


def old_exclude(batch_ids, batch_groups, cand_ids, cand_groups):
    return (batch_ids[:, None] == cand_ids[None, :]) | (batch_groups[:, None] == cand_groups[None, :])


def old_hard_minibatch(o, scores, exclude, positive_scores, margin, rng):
    """The previous HardMinibatch.mine for one side (scores[side] made contiguous, as the trainer used to)."""
    scores = scores.contiguous()
    ok = ~exclude
    if o.rank_min or o.rank_max:
        ranks = rank_desc(scores.masked_fill(exclude, NEG_INF))
        ok &= ranks >= o.rank_min
        if o.rank_max:
            ok &= ranks < o.rank_max
    pos = positive_scores[:, None]
    if o.min_gap is not None:
        ok &= scores <= pos - o.min_gap
    if o.strategy == "semihard":
        ok &= (scores < pos) & (scores > pos - margin)
    masked = scores.masked_fill(~ok, NEG_INF)
    if o.strategy == "sample":
        pool = masked.topk(min(o.top_k, masked.shape[1]), dim=1)
        valid_pool = pool.values > NEG_INF
        if o.temperature > 0:
            logits = (pool.values / o.temperature).masked_fill(~valid_pool, NEG_INF)
            gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=rng).clamp(1e-12, 1)))
            keys = logits + gumbel
        else:
            keys = torch.rand(pool.values.shape, generator=rng)
        keys = keys.masked_fill(~valid_pool, NEG_INF)
        pick = keys.topk(min(o.k, keys.shape[1]), dim=1).indices
        index, value = pool.indices.gather(1, pick), pool.values.gather(1, pick)
    else:
        top = masked.topk(min(o.k, masked.shape[1]), dim=1)
        index, value = top.indices, top.values
    return index, scores.gather(1, index), value > NEG_INF


def trainer_context(matrix, ids, groups, *, rank=0, world=1, cand_ids=None, cand_groups=None, margin=1.0):
    """A context as Trainer._train_step builds it: side a a transposed view, no exclusion mask.

    matrix: Float[N, N] the global score matrix; this rank's anchors are rows rank*B ... (rank+1)*B.
    """
    n = matrix.shape[0]
    b = n // world
    rows = slice(rank * b, (rank + 1) * b)
    cand_ids = ids if cand_ids is None else cand_ids
    cand_groups = groups if cand_groups is None else cand_groups
    batch = Batch(None, None, ids[rows], None if groups is ids else groups[rows])
    if world == 1:
        scores = (matrix.T, matrix)
    else:  # score_matrix(cand_a, emb_b).T and score_matrix(emb_a, cand_b), as the trainer's _batch_scores
        scores = (matrix[:, rows].contiguous().T, matrix[rows])  # a contiguous [N, B] matrix, transposed
    task = make_task(8)
    return mining_context(batch, _embs(b), _embs(n), scores,
                          torch.arange(b) + rank * b, cand_ids, cand_groups, task.model, task, 0, margin,
                          torch.device("cpu"))


class _E:
    def __init__(self, n):
        self.n = n

    def detach(self):
        return self


def _embs(n):
    return (_E(n), _E(n))


def tie_scores(n, seed, levels=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (n, n), generator=g).float()


OPTION_SETS = [
    {},
    {"k": 3},
    {"k": 5},
    {"strategy": "semihard"},
    {"strategy": "semihard", "k": 2},
    {"rank_min": 1, "rank_max": 4, "k": 2},
    {"min_gap": 0.5},
    {"min_gap": 0.0, "k": 2, "rank_min": 1},
    {"strategy": "sample", "top_k": 5, "k": 2},
    {"strategy": "sample", "top_k": 4, "k": 1, "temperature": 0.5},
]


@pytest.mark.parametrize("opts", OPTION_SETS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("n,grouped,levels", [(7, False, 2), (64, True, 3), (257, False, 4), (96, True, 0)])
def test_hard_minibatch_equals_the_masked_copy_implementation(opts, n, grouped, levels):
    matrix = tie_scores(n, n, levels) if levels else torch.randn(n, n, generator=torch.Generator().manual_seed(n))
    ids = torch.arange(n)
    groups = ids // 3 if grouped else ids
    ctx = trainer_context(matrix, ids, groups, margin=1.0)
    assert ctx.scores[0].data_ptr() == ctx.scores[1].data_ptr()  # side a is a view, not a copy
    o = HardMinibatch.Options(**opts)
    got = HardMinibatch(o, seed=3).generate(ctx)
    rng = torch.Generator().manual_seed(3)
    exclude = old_exclude(ids, groups, ids, groups)
    for side in (0, 1):
        index, score, valid = old_hard_minibatch(o, ctx.scores[side], exclude, ctx.positive_scores, 1.0, rng)
        assert torch.equal(got[side].index, index)
        assert torch.equal(got[side].score, score)
        assert torch.equal(got[side].valid, valid)


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("n,k", [(48, 2), (256, 1)])  # k = 1 with N >= 64: first_max, side a in its [N, B] layout
def test_hard_minibatch_on_a_rank_equals_the_masked_copy_implementation(world, n, k):
    matrix = tie_scores(n, world, 3)
    ids = torch.randperm(1000, generator=torch.Generator().manual_seed(1))[:n]
    groups = ids % 7  # several items share a group, across ranks
    o = HardMinibatch.Options(k=k)
    for rank in range(world):
        ctx = trainer_context(matrix, ids, groups, rank=rank, world=world)
        got = HardMinibatch(o).generate(ctx)
        b = n // world
        mine = slice(rank * b, (rank + 1) * b)
        exclude = old_exclude(ids[mine], groups[mine], ids, groups)
        for side in (0, 1):
            index, score, valid = old_hard_minibatch(o, ctx.scores[side], exclude, ctx.positive_scores, 1.0, None)
            assert torch.equal(got[side].index, index) and torch.equal(got[side].valid, valid)
            assert torch.equal(got[side].score, score)


def brute_pairs(bids, bgroups, cids, cgroups):
    return {(i, j) for i in range(len(bids)) for j in range(len(cids))
            if bids[i] == cids[j] or bgroups[i] == cgroups[j]}


@pytest.mark.parametrize("case", ["unique", "groups", "rank", "duplicate ids"])
def test_excluded_pairs_equal_brute_force(case):
    g = torch.Generator().manual_seed(0)
    n = 40
    ids = torch.randperm(200, generator=g)[:n]
    groups = ids
    cand_ids, cand_groups, rows = ids, ids, slice(0, n)
    if case == "groups":
        groups = torch.randint(0, 9, (n,), generator=g)
        cand_groups = groups
    elif case == "rank":
        groups = ids % 5
        cand_groups = groups
        rows = slice(20, 40)
    elif case == "duplicate ids":
        ids = torch.randint(0, 12, (n,), generator=g)
        cand_ids = ids
        groups = cand_groups = torch.randint(0, 30, (n,), generator=g)
    batch = Batch(None, None, ids[rows], groups[rows])
    ctx = MiningContext(batch, None, None, (torch.zeros(1), torch.zeros(1)), torch.zeros(ids[rows].shape[0]).long(),
                        None, cand_ids, None, None, 0, 1.0, torch.device("cpu"), candidate_groups=cand_groups)
    r, c = ctx.excluded_pairs()
    want = brute_pairs(ids[rows].tolist(), groups[rows].tolist(), cand_ids.tolist(), cand_groups.tolist())
    assert set(zip(r.tolist(), c.tolist(), strict=True)) == want
    mask = torch.zeros(ids[rows].shape[0], n, dtype=torch.bool)
    for i, j in want:
        mask[i, j] = True
    assert torch.equal(ctx.exclude, mask)  # the lazily built mask agrees
    index = torch.randint(0, n, (ids[rows].shape[0], 6), generator=g)
    assert torch.equal(ctx.excluded_at(index), mask.gather(1, index))


@pytest.mark.parametrize("k", [1, 5, 63])
def test_random_draws_equal_the_masked_copy_implementation(k):
    n = 64
    matrix = torch.randn(n, n, generator=torch.Generator().manual_seed(k))
    ids = torch.arange(n)
    groups = ids // 2
    ctx = trainer_context(matrix, ids, groups)
    got = RandomNegatives(RandomNegatives.Options(k=k), seed=11).generate(ctx)
    rng = torch.Generator().manual_seed(11)
    exclude = old_exclude(ids, groups, ids, groups)
    for side in (0, 1):
        keys = torch.rand(n, n, generator=rng).masked_fill(exclude, -1.0)
        top = keys.topk(k, dim=1)
        assert torch.equal(got[side].index, top.indices)
        assert torch.equal(got[side].valid, top.values >= 0)
        assert torch.equal(got[side].score, ctx.scores[side].gather(1, top.indices))


class _SameGroup(NegativeGenerator):
    name = "same-group"

    def mine(self, ctx):
        index = torch.full((ctx.positive.shape[0], 1), 1)  # candidate 1 shares anchor 0's group
        return {1: Negatives.from_batch(index, torch.zeros(index.shape))}


def test_validation_without_a_mask_still_rejects_an_excluded_negative():
    n = 8
    ids = torch.arange(n)
    ctx = trainer_context(torch.randn(n, n), ids, ids // 2)
    with pytest.raises(PluginError, match="shares the anchor's id or group"):
        _SameGroup().generate(ctx)
    assert "exclude" not in ctx._cache  # the check did not need the B x N mask


def _hard_rows(kind, b, n, dtype, g):
    """Float[b, n] scores made to trip an argmax: ties, signed zeros, -inf rows, NaN, +inf, subnormals."""
    if kind == "ties":
        return torch.randint(0, 3, (b, n), generator=g).to(dtype)
    if kind == "zeros":  # +0.0 and -0.0 tie
        return torch.randint(-1, 2, (b, n), generator=g).to(dtype) * 0.0
    if kind == "excluded rows":  # some rows all -inf (every candidate excluded), others partly
        m = torch.randint(0, 2, (b, n), generator=g).to(dtype)
        m[m == 0] = NEG_INF
        m[::3] = NEG_INF
        return m
    if kind == "nan":
        m = torch.randn(b, n, generator=g, dtype=dtype)
        m[torch.rand(b, n, generator=g) < 0.02] = float("nan")
        return m
    if kind == "inf":
        m = torch.randn(b, n, generator=g, dtype=dtype)
        m[torch.rand(b, n, generator=g) < 0.02] = float("inf")
        return m
    big = torch.finfo(dtype)  # extremes: subnormals must not compare equal
    m = torch.randint(0, 4, (b, n), generator=g).to(dtype) * (big.max / 4)  # finite, differences overflow
    m[:, ::3] *= -1
    m[torch.rand(b, n, generator=g) < 0.3] = big.tiny / 4
    m[torch.rand(b, n, generator=g) < 0.3] = big.tiny / 8
    return m


@pytest.mark.parametrize("kind", ["ties", "zeros", "excluded rows", "nan", "inf", "extremes"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [7, 63, 64, 65, 300])
def test_first_max_equals_topk_bit_for_bit(kind, dtype, n):
    g = torch.Generator().manual_seed(n)
    m = _hard_rows(kind, 37, n, dtype, g)
    for layout in (m, m.T.contiguous().T):  # row-major, and a transposed view as side a is
        want = layout.contiguous().topk(1, dim=1)
        got = first_max(layout.clone())
        if n < 64 or kind in ("nan", "inf"):  # topk's own choice among ties (nth_element), or NaN / +inf maxima
            assert got is None
            continue
        value, index, valid = got
        assert torch.equal(index, want.indices)
        assert torch.equal(valid, want.values > NEG_INF)
        assert torch.equal(value, want.values)


@pytest.mark.parametrize("opts", [{}, {"strategy": "semihard"}, {"min_gap": 0.5}, {"k": 3}, {"rank_min": 1}])
@pytest.mark.parametrize("n,world", [(64, 1), (257, 1), (128, 2)])
def test_hard_minibatch_output_passes_the_full_validation(opts, n, world):
    """HardMinibatch skips the base class's value checks (values_valid_by_construction): they must hold anyway."""
    matrix = tie_scores(n, n, 3) / 2  # 0, 0.5, 1: ties, and semihard negatives within the margin of 1
    matrix[5] = NEG_INF  # an anchor whose scores are all -inf: no valid negative on side b
    ids = torch.arange(n)
    groups = ids // 4
    gen = HardMinibatch(HardMinibatch.Options(**opts), seed=1)
    for rank in range(world):
        ctx = trainer_context(matrix, ids, groups, rank=rank, world=world)
        for side, negs in gen.generate(ctx).items():
            gen._validate_values(ctx, side, negs)
            assert negs.valid.any()
            if side == 1 and rank == 0:
                assert not negs.valid[5].any()  # the checks saw invalid slots too


class _ExcludedHard(HardMinibatch):
    """A subclass that overrides mine badly: it inherits values_valid_by_construction, which must not apply."""

    def mine(self, ctx):
        out = super().mine(ctx)
        negs = out[1]
        return {1: Negatives.from_batch(ctx.positive[:, None].clone(), negs.score, negs.valid)}


def test_a_subclass_is_validated_in_full():
    n = 64
    ctx = trainer_context(torch.randn(n, n), torch.arange(n), torch.arange(n))
    with pytest.raises(PluginError, match="shares the anchor's id or group"):
        _ExcludedHard().generate(ctx)


@pytest.mark.parametrize("grouped", [False, True])
def test_masked_scores_keep_layout(grouped):
    n = 70
    ids = torch.arange(n)
    ctx = trainer_context(torch.randn(n, n), ids, ids // 3 if grouped else ids)
    for side in (0, 1):
        kept, plain = ctx.masked_scores(side, keep_layout=True), ctx.masked_scores(side)
        assert plain.is_contiguous() and kept.stride() == ctx.scores[side].stride()
        assert torch.equal(kept, plain)
        assert kept.data_ptr() != ctx.scores[side].data_ptr()  # a copy of its own
        want = ctx.scores[side].masked_fill(ctx.exclude, NEG_INF)
        assert torch.equal(plain, want)
