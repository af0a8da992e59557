"""faiss ``cache_store=disk``: the same negatives as the in-memory cache, the store's reads, files cleaned up."""

from __future__ import annotations

import json
import os

import pytest
import torch

from negmine import DualEncoder, Embedding, Task, TensorPairs, Trainer
from negmine.errors import ConfigError
from negmine.plugins import get_plugin_manager
from negmine.scoring import MatchmapScore
from negmine.testing import batch_context
from negmine_faiss.generator import FaissNegatives, encode_corpus, encode_corpus_streamed
from negmine_faiss.store import DiskEmbeddings
from negmine_random.generator import RandomNegatives
from negmine_toy.task import build_toy

CPU = torch.device("cpu")


make_ctx = batch_context  # the trainer's context for a batch of training ids


class Ragged(DualEncoder):
    """Side a: a 2x2 map per item; side b: a sequence whose padded length is the longest of its *batch* (so batches
    have different lengths, as with per-batch padding) and whose valid length varies by item."""

    def __init__(self):
        super().__init__(MatchmapScore())
        gen = torch.Generator().manual_seed(0)
        self.wa = torch.nn.Parameter(torch.randn(6, 8 * 4, generator=gen))
        self.wb = torch.nn.Parameter(torch.randn(6, 8, generator=gen))

    def encode(self, side, inputs):
        if side == 0:
            return Embedding((inputs @ self.wa).view(-1, 8, 2, 2))
        x, lengths = inputs
        t = int(lengths.max())
        frames = torch.arange(1, t + 1, dtype=x.dtype)  # [T]
        values = (x @ self.wb)[:, :, None] * frames.sin()[None, None, :] + 0.1 * frames.cos()
        mask = torch.arange(t)[None, :] < lengths[:, None]
        return Embedding(values * mask[:, None, :], lengths)


@pytest.fixture(scope="module")
def ragged():
    gen = torch.Generator().manual_seed(1)
    n = 300
    a, b = torch.randn(n, 6, generator=gen), torch.randn(n, 6, generator=gen)
    lengths = torch.randint(1, 12, (n,), generator=gen)
    data = TensorPairs(a, (b, lengths))
    return Task("ragged", Ragged(), data, data, provides=frozenset({"corpus"}))


def negatives(task, ids, **options):
    """(generator, {side: Negatives}) of one generator built on ``task`` and mined for the batch ``ids``."""
    gen = FaissNegatives(FaissNegatives.Options(**options), task=task)
    return gen, gen.generate(make_ctx(task, ids))


def assert_same(a, b):
    for side in a:
        assert torch.equal(a[side].index, b[side].index) and torch.equal(a[side].valid, b[side].valid)
        assert torch.equal(a[side].score, b[side].score)
        assert torch.equal(a[side].meta["index_score"], b[side].meta["index_score"])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("profile", ["small", "dense"])
def test_disk_gives_the_in_memory_negatives(profile, dtype, tmp_path):
    task = build_toy(profile, seed=0, options={"n_train": 600, "n_val": 50})
    ids = torch.arange(24)
    opts = dict(k=4, candidates=40, cache_dtype=dtype, recall_sample=32, encode_batch=64)  # 600 = 9 full batches + 24
    mem_gen, mem = negatives(task, ids, **opts)
    map_gen, mapped = negatives(task, ids, cache_store="disk", cache_dir=str(tmp_path), **opts)
    assert_same(mem, mapped)
    assert mem_gen.quality == map_gen.quality
    for side in (0, 1):
        store, cache = map_gen.indexes[side].cache, mem_gen.indexes[side].cache
        assert isinstance(store, DiskEmbeddings) and store.dtype == getattr(torch, dtype)
        assert store.nbytes == cache.values.numel() * cache.values.element_size()
        everything = store[torch.arange(600)]
        assert torch.equal(everything.values, cache.values)
        assert (everything.lengths is None) == (cache.lengths is None)
        if cache.lengths is not None:
            assert torch.equal(everything.lengths, cache.lengths)
        assert store.directory.startswith(str(tmp_path))
    assert len(os.listdir(tmp_path)) == 2  # one store per side
    map_gen.refresh(task.model, task.train, CPU, [0, 1])  # the old stores are deleted before the new are written
    assert len(os.listdir(tmp_path)) == 2
    map_gen._drop_indexes()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_batches_of_different_lengths_read_back_padded_like_the_in_memory_cache(ragged, dtype, tmp_path):
    opts = dict(k=3, candidates=30, sides="b", cache_dtype=dtype, recall_sample=0, encode_batch=32)
    mem_gen, mem = negatives(ragged, torch.arange(16), **opts)
    map_gen, mapped = negatives(ragged, torch.arange(16), cache_store="disk", cache_dir=str(tmp_path), **opts)
    store, cache = map_gen.indexes[1].cache, mem_gen.indexes[1].cache
    assert len(store.shapes) > 1  # several files, one per batch length
    assert store.item_shape == tuple(cache.values.shape[1:])
    some = torch.tensor([299, 0, 5, 64, 5, 200])  # any order, repeats, across files
    got = store[some]
    assert torch.equal(got.values, cache.values[some]) and torch.equal(got.lengths, cache.lengths[some])
    assert torch.equal(mem[1].index, mapped[1].index) and torch.equal(mem[1].score, mapped[1].score)
    # the pooled vectors are computed per batch here: equal to the in-memory ones up to rounding
    normal = encode_corpus(ragged.model, ragged.train, 1, CPU).pooled()
    streamed = encode_corpus_streamed(ragged.model, ragged.train, 1, CPU, 32, normalize=False)
    torch.testing.assert_close(torch.from_numpy(streamed), normal, rtol=1e-6, atol=1e-6)


def test_store_checks_and_cleanup(tmp_path):
    store = DiskEmbeddings(4, torch.float16, tmp_path / "sub")
    store.write(torch.tensor([2, 0]), Embedding(torch.ones(2, 3, 5)))
    with pytest.raises(Exception, match="2 of 4 corpus items missing"):
        store.finish()
    store.close()
    assert os.listdir(tmp_path / "sub") == []
    store = DiskEmbeddings(2, torch.float32, tmp_path)
    store.write(torch.tensor([0]), Embedding(torch.ones(1, 3, 5)))
    store.write(torch.tensor([1]), Embedding(torch.ones(1, 4, 5)))
    with pytest.raises(Exception, match="other than along the last axis"):
        store.finish()
    directory = store.directory
    del store  # garbage-collected: the files go too
    assert not os.path.exists(directory)


def test_a_failed_build_leaves_no_files(tmp_path):
    task = build_toy("small", seed=0)
    gen = FaissNegatives(FaissNegatives.Options(cache_store="disk", cache_dir=str(tmp_path), index="NotAnIndex"),
                         task=task)
    with pytest.raises(Exception, match="factory string"):
        gen.refresh(task.model, task.train, CPU, [0, 1])
    assert os.listdir(tmp_path) == []


def test_async_refresh_keeps_the_old_store_until_the_swap(tmp_path):
    task = build_toy("small", seed=0)
    gen = FaissNegatives(FaissNegatives.Options(cache_store="disk", cache_dir=str(tmp_path), refresh="async",
                                                refresh_every=2, async_lag=1, recall_sample=0, sides="b"), task=task)
    gen.last_refresh = gen.built_from = 0
    gen.refresh(task.model, task.train, CPU, [1])
    old = gen.indexes[1].cache.directory
    gen.advance_async(2, task.model, task.train, CPU, [1])  # the background build writes a second store
    gen.pending.thread.join()
    assert len(os.listdir(tmp_path)) == 2 and os.path.exists(old)
    assert gen.advance_async(3, task.model, task.train, CPU, [1])  # swapped: the stale store is deleted
    assert os.listdir(tmp_path) == [os.path.basename(gen.indexes[1].cache.directory)]
    gen.advance_async(4, task.model, task.train, CPU, [1])
    gen.close()  # a build in flight is discarded with its files
    assert len(os.listdir(tmp_path)) == 1


def test_training_with_disk_equals_memory_and_cleans_up_at_stage_end(tmp_path):
    lines = {}
    for store in ("memory", "disk"):
        faiss = {"refresh_every": 3, "cache_dtype": "float16", "cache_store": store}
        if store == "disk":
            faiss["cache_dir"] = str(tmp_path / "cache")
        config = {"steps": 7, "negatives": ["random", "faiss"], "device": "cpu", "eval_size": 50, "log_every": 1,
                  "checkpoint_every": 0, "generators": {"faiss": faiss}}
        run = tmp_path / store
        Trainer(build_toy("small", seed=0), config, plugins=get_plugin_manager(),
                generators=[RandomNegatives, FaissNegatives], run_dir=run).fit()
        lines[store] = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
                        if '"loss"' in line]
    assert lines["memory"] == lines["disk"]
    assert os.listdir(tmp_path / "cache") == []  # the stage end deleted the serving stores


def test_option_checks(tmp_path):
    with pytest.raises(ValueError, match="rescore=cached"):
        FaissNegatives.Options(cache_store="disk", rescore="none")
    with pytest.raises(ValueError, match="needs cache_store=disk"):
        FaissNegatives.Options(cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="disk"):
        Trainer(build_toy("small"), {"negatives": ["faiss"], "generators": {"faiss": {"cache_store": "mmap"}}},
                plugins=get_plugin_manager(), run_dir=tmp_path)
