"""The ``faiss`` generator: exact against brute force, exclusion, rank window, refresh schedule, resume, CLI, IVF."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from negmine import CosineScore, DualEncoder, Embedding, Task, TensorPairs, Trainer, hookimpl
from negmine.errors import ConfigError, PluginError
from negmine.generator import NegativeKind
from negmine.plugins import get_plugin_manager
from negmine.testing import batch_context
from negmine_faiss.generator import FaissNegatives, build_index, encode_corpus
from negmine_toy.task import build_toy

CPU = torch.device("cpu")


make_ctx = batch_context  # the trainer's context for a batch of training ids


def brute_force(task, ctx, side):
    """Float[B, N] true scores of pair i with its side-s member replaced by corpus item j; excluded items -inf."""
    model = task.model
    corpus = encode_corpus(model, task.train, side, CPU)
    with torch.no_grad():
        if side == 0:
            scores = model.score_matrix(corpus, ctx.embeddings[1]).T
        else:
            scores = model.score_matrix(ctx.embeddings[0], corpus)
    groups = task.train.groups if task.train.groups is not None else torch.arange(len(task.train))
    banned = (torch.arange(len(task.train))[None] == ctx.batch.ids[:, None]) | (
        groups[None] == ctx.batch.group_ids[:, None])
    return scores.masked_fill(banned, float("-inf")), banned


@pytest.fixture(scope="module")
def toy():
    return build_toy("small", seed=0)


class Identity(DualEncoder):
    """Both towers are the identity: pair i's two sides are the same vector, so its nearest neighbours are itself and
    its group-mates (the hardest case for exclusion)."""

    def __init__(self):
        super().__init__(CosineScore())

    def encode(self, side, inputs):
        return Embedding(inputs)


@pytest.fixture(scope="module")
def near_duplicates():
    """40 latents x 3 views sharing a group id; views differ by tiny noise."""
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(40, 8, generator=gen).repeat_interleave(3, dim=0)
    x = latents + 0.01 * torch.randn(120, 8, generator=gen)
    groups = torch.arange(40).repeat_interleave(3)
    data = TensorPairs(x, x.clone(), groups=groups)
    return Task("dups", Identity(), data, data, provides=frozenset({"corpus"}))


@pytest.mark.parametrize("rescore", ["none", "cached"])
def test_flat_index_equals_brute_force_topk(toy, rescore):
    gen = FaissNegatives(FaissNegatives.Options(k=5, candidates=64, rescore=rescore))
    ctx = make_ctx(toy, torch.arange(40, 72))
    out = gen.generate(ctx)
    assert set(out) == {0, 1}
    for side in (0, 1):
        negs = out[side]
        assert negs.kind == NegativeKind.DATASET and negs.source == "faiss"
        scores, _ = brute_force(toy, ctx, side)
        top = scores.topk(5, dim=1)
        assert torch.equal(negs.index, top.indices)
        assert negs.valid.all()
        torch.testing.assert_close(negs.score, top.values, rtol=1e-4, atol=1e-4)
        assert torch.equal(negs.meta["rank"], torch.arange(5).expand(32, 5))


def test_excludes_anchor_id_and_group(near_duplicates):
    task = near_duplicates
    gen = FaissNegatives(FaissNegatives.Options(k=8, candidates=32))
    ids = torch.arange(0, 96, 3)  # one view of 32 latents; each has two group-mates in the corpus
    ctx = make_ctx(task, ids)
    out = gen.generate(ctx)
    groups = task.train.groups
    for side in (0, 1):
        # unfiltered, the three nearest items are the anchor itself and its two group-mates
        raw_ids, _ = gen.search(side, ctx.embeddings[1 - side].pooled(), 3)
        assert (raw_ids[:, 0] == ids).all() and (groups[raw_ids] == ctx.batch.group_ids[:, None]).all()
        negs = out[side]
        assert negs.valid.all()
        assert not (negs.index == ids[:, None]).any()
        assert not (groups[negs.index] == ctx.batch.group_ids[:, None]).any()
        scores, _ = brute_force(task, ctx, side)
        assert torch.equal(negs.index, scores.topk(8, dim=1).indices)


def test_rank_window_hardest_and_sample(toy):
    ctx = make_ctx(toy, torch.arange(100, 132))
    hard = FaissNegatives(FaissNegatives.Options(k=4, candidates=32, rank_min=2, rank_max=6)).generate(ctx)
    sample_gen = FaissNegatives(FaissNegatives.Options(k=2, candidates=32, rank_min=3, rank_max=10, strategy="sample"),
                                seed=7)
    for side in (0, 1):
        order = brute_force(toy, ctx, side)[0].argsort(dim=1, descending=True)
        assert torch.equal(hard[side].index, order[:, 2:6])
        assert torch.equal(hard[side].meta["rank"], torch.arange(2, 6).expand(32, 4))
    picks = []
    for _ in range(5):
        out = sample_gen.generate(ctx)
        for side in (0, 1):
            order = brute_force(toy, ctx, side)[0].argsort(dim=1, descending=True)
            negs = out[side]
            rank = negs.meta["rank"]
            assert negs.valid.all() and ((rank >= 3) & (rank < 10)).all()
            assert (rank[:, 0] < rank[:, 1]).all()  # listed hardest first, no duplicates
            assert torch.equal(negs.index, order.gather(1, rank))
            picks.append(rank)
    assert len(torch.cat(picks).unique()) == 7  # every rank of the window gets drawn


def test_min_gap_keeps_negatives_below_the_positive(toy):
    ctx = make_ctx(toy, torch.arange(200, 232))
    gap = 0.05
    out = FaissNegatives(FaissNegatives.Options(k=3, candidates=600, min_gap=gap)).generate(ctx)  # whole corpus
    pos = ctx.positive_scores[:, None]
    for side in (0, 1):
        negs = out[side]
        assert negs.valid.any()
        assert (negs.score[negs.valid] <= (pos - gap).expand_as(negs.score)[negs.valid] + 1e-6).all()
        scores, _ = brute_force(toy, ctx, side)
        expected = scores.masked_fill(scores > pos - gap, float("-inf")).topk(3, dim=1)
        ok = expected.values > float("-inf")
        assert torch.equal(negs.valid, ok)
        assert torch.equal(negs.index[ok], expected.indices[ok])


def test_fewer_candidates_than_k_leaves_invalid_slots(toy):
    ctx = make_ctx(toy, torch.arange(8))
    negs = FaissNegatives(FaissNegatives.Options(k=4, candidates=4, rank_min=2)).generate(ctx)[1]
    assert negs.valid.sum(dim=1).max() <= 2  # ranks 2 and 3 of at most 4 candidates
    assert (negs.index[~negs.valid] == -1).all()
    assert torch.isinf(negs.score[~negs.valid]).all()


def test_cached_rescore_uses_the_true_score_of_dense_models():
    task = build_toy("dense", seed=0, options={"n_train": 300, "n_val": 50})
    ctx = make_ctx(task, torch.arange(16))
    gen = FaissNegatives(FaissNegatives.Options(k=3, candidates=300, sides="b"))
    out = gen.generate(ctx)
    assert set(out) == {1}
    scores, _ = brute_force(task, ctx, 1)  # matchmap scores; the index ranks pooled vectors
    top = scores.topk(3, dim=1)
    assert torch.equal(out[1].index, top.indices)
    torch.testing.assert_close(out[1].score, top.values, rtol=1e-4, atol=1e-4)


def test_ivf_factory_string(toy):
    train = toy.train
    vectors = encode_corpus(toy.model, train, 1, CPU).values.numpy()
    flat = build_index(vectors, "Flat")
    ivf = build_index(vectors, "IVF8,Flat", nprobe=8)  # every list visited: exact
    queries = vectors[:50]
    assert np.array_equal(flat.search(queries, 10)[1], ivf.search(queries, 10)[1])
    ctx = make_ctx(toy, torch.arange(32))
    negs = FaissNegatives(FaissNegatives.Options(k=3, index="IVF8,Flat", nprobe=2)).generate(ctx)
    for side in (0, 1):
        assert negs[side].valid.all() and not (negs[side].index == ctx.batch.ids[:, None]).any()
    with pytest.raises(PluginError, match="factory string"):
        build_index(vectors, "NotAnIndex")
    with pytest.raises(PluginError, match="lists"):
        build_index(vectors[:20], "IVF64,Flat")


def test_option_checks_fail_at_config_time(tmp_path):
    with pytest.raises(ValueError, match="rank_max"):
        FaissNegatives.Options(candidates=8, rank_max=16)
    with pytest.raises(ValueError, match="rank_min"):
        FaissNegatives.Options(rank_min=4, rank_max=3)
    with pytest.raises(ConfigError, match="rank_max"):  # before any training
        Trainer(build_toy("small"), {"negatives": ["faiss"], "generators": {"faiss": {"rank_max": 64}}},
                plugins=get_plugin_manager(), run_dir=tmp_path)


class Interrupted(Exception):
    pass


class CountingFaiss(FaissNegatives):
    """Records the global step of every index build; can interrupt training once at a given step."""

    builds: list[int] = []
    crash_at: int | None = None

    def refresh(self, model, data, device, sides):
        step = getattr(self, "_trainer_step", None)
        CountingFaiss.builds.append(step)
        super().refresh(model, data, device, sides)

    @hookimpl
    def negmine_stage_start(self, trainer):
        self._trainer_step = trainer.global_step
        super().negmine_stage_start(trainer)

    @hookimpl
    def negmine_step_end(self, trainer, step, metrics):
        self._trainer_step = step
        super().negmine_step_end(trainer, step, metrics)
        if CountingFaiss.crash_at == step:
            CountingFaiss.crash_at = None
            raise Interrupted

    def mine(self, ctx):
        if not self._hooked:
            self._trainer_step = ctx.step
        return super().mine(ctx)


def _config(steps, **extra):
    return {"steps": steps, "negatives": ["random", "faiss"], "device": "cpu", "eval_size": 50, "log_every": 3,
            "checkpoint_every": 0, "generators": {"faiss": {"refresh_every": 3}}, **extra}


@pytest.mark.parametrize("hooks", [True, False])
def test_refresh_every_n_steps(tmp_path, hooks):
    CountingFaiss.builds = []
    pm = get_plugin_manager() if hooks else None
    from negmine_random.generator import RandomNegatives

    trainer = Trainer(build_toy("small", seed=0), _config(10), plugins=pm, generators=[RandomNegatives, CountingFaiss],
                      run_dir=tmp_path / "run")
    trainer.fit()
    # built at stage start, rebuilt after steps 3, 6, 9; not after the last step (10)
    assert CountingFaiss.builds == [0, 3, 6, 9]
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    if hooks:
        logged = {m["step"]: m.get("faiss/refreshes") for m in metrics if "loss" in m}
        assert logged == {3: 2, 6: 3, 9: 4, 10: None}  # builds so far, logged on the steps that rebuild


def test_resume_rebuilds_the_index_and_keeps_the_schedule(tmp_path):
    from negmine_random.generator import RandomNegatives

    pm = get_plugin_manager()
    gens = [RandomNegatives, CountingFaiss]
    CountingFaiss.builds, CountingFaiss.crash_at = [], 5
    config = _config(10, checkpoint_every=4)
    with pytest.raises(Interrupted):
        Trainer(build_toy("small", seed=0), config, plugins=pm, generators=gens, run_dir=tmp_path).fit()
    assert CountingFaiss.builds == [0, 3]
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["global_step"] == 4 and state["generators"]["faiss"]["last_refresh"] == 3
    CountingFaiss.builds = []
    Trainer(build_toy("small", seed=0), config, plugins=pm, generators=gens, run_dir=tmp_path, resume=True).fit()
    assert CountingFaiss.builds == [4, 6, 9]  # rebuilt on resume, then the uninterrupted run's schedule


def test_cli_train_with_faiss_improves_recall(tmp_path):
    from negmine.cli import main

    run_dir = tmp_path / "cli"
    code = main(["train", "--task", "toy", "--profile", "small", "-n", "random", "-n", "faiss", "--device", "cpu",
                 "--faiss-refresh-every", "20", "--faiss-k", "2", "--run-dir", str(run_dir), "--quiet"])
    assert code == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 60
    assert summary["final"]["mean@5"] > summary["initial"]["mean@5"] + 0.05


def test_shared_contract_checker_without_a_trainer():
    """No lifecycle hooks: the index is built lazily on the first mine() and the shared contract holds."""
    from negmine.testing import check_generator, make_task

    out = check_generator(FaissNegatives, make_task())
    assert set(out) == {0, 1} and all(n.kind == NegativeKind.DATASET for n in out.values())
