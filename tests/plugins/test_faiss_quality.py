"""faiss index quality: sampled recall against brute force, the low-recall warning, index=auto, a float16 cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from negmine import CosineScore, DualEncoder, Embedding, Task, TensorPairs, Trainer
from negmine.errors import ConfigError
from negmine.plugins import get_plugin_manager
from negmine_faiss.generator import FaissNegatives, auto_spec, build_index, tune_and_measure
from negmine_toy.task import build_toy

CPU = torch.device("cpu")


class Identity(DualEncoder):
    def __init__(self):
        super().__init__(CosineScore())

    def encode(self, side, inputs):
        return Embedding(inputs)


def uniform_task(n, d, seed=0, groups=None):
    """Unstructured embeddings: both sides the same uniform point on the sphere (plus a little noise on side a)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, d, generator=gen), dim=1)
    data = TensorPairs(x + 0.05 * torch.randn(n, d, generator=gen), x.clone(), groups=groups)
    return Task("uniform", Identity(), data, data, provides=frozenset({"corpus"}))


def brute_quality(vectors, queries, query_ids, groups, index, k):
    """Recall and hardest-found by loops over every corpus item (the oracle)."""
    scores, ids = index.search(queries, vectors.shape[0])  # the index's own order, deep enough for any k
    recall, hardest = [], []
    for q in range(len(queries)):
        exact = sorted(((float(vectors[j] @ queries[q]), j) for j in range(len(vectors))
                        if groups[j] != groups[query_ids[q]]), reverse=True)
        found = [j for j in ids[q][: k + 10] if j >= 0 and groups[j] != groups[query_ids[q]]][:k]
        recall.append(len(set(found) & {j for _, j in exact[:k]}) / k)
        hardest.append(bool(found) and float(vectors[found[0]] @ queries[q]) >= exact[0][0] - 1e-6)
    return float(np.mean(recall)), float(np.mean(hardest))


@pytest.mark.parametrize("spec,nprobe", [("Flat", 1), ("IVF16,Flat", 1), ("IVF16,Flat", 4)])
def test_sampled_quality_equals_brute_force(spec, nprobe):
    gen = np.random.default_rng(0)
    vectors = gen.standard_normal((600, 8)).astype(np.float32)
    queries = gen.standard_normal((40, 8)).astype(np.float32)
    groups = np.arange(600) // 3
    query_ids = gen.choice(600, 40, replace=False)
    index = build_index(vectors, spec, nprobe)
    q = tune_and_measure(index, vectors, queries, query_ids, groups, k=5)
    # faiss returns fewer than ntotal hits for a shallow IVF search: compare with what a deep search would see
    want_recall, want_hardest = brute_quality(vectors, queries, query_ids, groups, index, 5)
    assert q["index_recall"] == pytest.approx(want_recall)
    assert q["hardest_found"] == pytest.approx(want_hardest)
    if spec == "Flat":
        assert q["index_recall"] == 1.0 and q["hardest_found"] == 1.0
    else:
        assert q["nprobe"] == nprobe


def test_low_recall_on_uniform_data_warns_and_auto_reaches_the_target():
    task = uniform_task(6000, 32)
    warnings = []
    ivf = FaissNegatives(FaissNegatives.Options(index="IVF64,Flat", nprobe=1, recall_warn=0.8, sides="b"))
    ivf.refresh(task.model, task.train, CPU, [1])
    ivf._warn_if_poor(warnings.append)
    recall = ivf.telemetry()["faiss/index_recall"]
    assert recall < 0.6  # unstructured data: one of 64 lists holds few of the true neighbours
    assert len(warnings) == 1 and "finds only" in warnings[0] and "recall_warn 0.8" in warnings[0]
    auto = FaissNegatives(FaissNegatives.Options(index="auto", nprobe=1, auto_exact_below=1000, recall_target=0.9,
                                                 sides="b"))
    auto.refresh(task.model, task.train, CPU, [1])
    t = auto.telemetry()
    assert t["faiss/index_recall"] >= 0.9
    assert t["faiss/nprobe"] > 1  # it had to raise nprobe to get there
    warnings.clear()
    auto._warn_if_poor(warnings.append)
    assert warnings == []
    assert auto.indexes[1].index.ntotal == 6000


def test_auto_spec():
    assert auto_spec(10_000) == "Flat"
    assert auto_spec(100_000) == "IVF1024,Flat"  # 4 sqrt(1e5) = 1265
    assert auto_spec(1_000_000) == "IVF4096,Flat"  # 4000


def test_trainer_logs_index_recall_from_the_stage_start(tmp_path):
    config = {"steps": 4, "negatives": ["random", "faiss"], "device": "cpu", "eval_size": 50, "log_every": 2,
              "checkpoint_every": 0, "generators": {"faiss": {"refresh_every": 0, "recall_sample": 64}}}
    Trainer(build_toy("small", seed=0), config, plugins=get_plugin_manager(), run_dir=tmp_path / "run").fit()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = {m["step"]: m for m in lines if "loss" in m}
    assert steps[2]["faiss/index_recall"] == 1.0  # Flat is exact; the stage start's build is logged at step 2
    assert steps[2]["faiss/hardest_found"] == 1.0
    assert "faiss/index_recall" not in steps[4]  # no build since


def test_float16_cache_halves_memory_and_keeps_the_negatives():
    task = build_toy("small", seed=0)
    batch = task.train.batch(torch.arange(32))
    from negmine.trainer import mining_context

    with torch.no_grad():
        ea, eb = task.model.encode(0, batch.a), task.model.encode(1, batch.b)
        m = task.model.score_matrix(ea, eb)
    ctx = mining_context(batch, (ea, eb), (ea, eb), (m.T, m), torch.arange(32), batch.ids, batch.group_ids,
                         task.model, task, 0, 1.0, CPU)
    out = {}
    for dtype in ("float32", "float16"):
        gen = FaissNegatives(FaissNegatives.Options(k=3, cache_dtype=dtype, recall_sample=0), task=task)
        out[dtype] = (gen, gen.generate(ctx))
    full, half = out["float32"][0].indexes[1].cache.values, out["float16"][0].indexes[1].cache.values
    assert half.dtype == torch.float16 and half.element_size() * 2 == full.element_size()
    for side in (0, 1):
        a, b = out["float32"][1][side], out["float16"][1][side]
        assert (a.index == b.index).float().mean() >= 0.95
        torch.testing.assert_close(a.score, b.score, atol=2e-2, rtol=1e-2)


def test_bad_cache_dtype_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="float16"):
        Trainer(build_toy("small"), {"negatives": ["faiss"], "generators": {"faiss": {"cache_dtype": "fp16"}}},
                plugins=get_plugin_manager(), run_dir=tmp_path)
