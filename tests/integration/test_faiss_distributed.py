"""faiss under torchrun: each of two gloo ranks encodes half of the corpus, and both mine the one-process negatives
(with the in-memory cache, and with the disk one, whose batches are gathered as they are encoded)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

OPTIONS = {"k": 3, "candidates": 16, "recall_sample": 0}


def _mine(extra=None):
    """(negatives {side: (ids, score, valid)}, rows encoded per side): a Flat index over the small toy task, mined for
    the batch 0..15 as one process would see it."""
    from negmine.trainer import mining_context
    from negmine_faiss.generator import FaissNegatives
    from negmine_toy.task import build_toy

    task = build_toy("small", seed=0)
    model = task.model
    encoded = {0: 0, 1: 0}
    plain = model.encode

    def counting(side, inputs):
        out = plain(side, inputs)
        encoded[side] += out.values.shape[0]
        return out

    model.encode = counting
    gen = FaissNegatives(FaissNegatives.Options(**OPTIONS, **(extra or {})), task=task)
    gen.refresh(model, task.train, torch.device("cpu"), [0, 1])
    corpus_rows = dict(encoded)
    model.encode = plain
    batch = task.train.batch(torch.arange(16))
    with torch.no_grad():
        ea, eb = model.encode(0, batch.a), model.encode(1, batch.b)
        m = model.score_matrix(ea, eb)
    ctx = mining_context(batch, (ea, eb), (ea, eb), (m.T, m), torch.arange(16), batch.ids, batch.group_ids, model,
                         task, 0, 1.0, torch.device("cpu"))
    gen._hooked = True  # the index is built; mine from it
    negs = gen.generate(ctx)
    return {s: (n.index, n.score, n.valid) for s, n in negs.items()}, corpus_rows, len(task.train)


def _worker(rank, world, port, out, extra=None):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from negmine.distributed import shut_down_when_done

    dist.init_process_group("gloo", rank=rank, world_size=world)
    with shut_down_when_done():
        negs, rows, n = _mine(extra)
        torch.save({"negs": negs, "rows": rows, "n": n}, f"{out}.{rank}")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("store", ["memory", "disk"])
def test_two_ranks_encode_half_the_corpus_each_and_mine_the_one_process_negatives(tmp_path, store):
    single, rows, n = _mine()  # one process, in-memory cache
    assert rows == {0: n, 1: n}
    out = str(tmp_path / "negs")
    extra = {"cache_store": "disk", "cache_dir": str(tmp_path / "cache")} if store == "disk" else None
    mp.spawn(_worker, args=(2, _free_port(), out, extra), nprocs=2, join=True)
    for rank in (0, 1):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        assert got["rows"] == {0: -(-n // 2), 1: -(-n // 2)}  # half of the corpus each (the last shard padded)
        for side in (0, 1):
            ids, score, valid = got["negs"][side]
            assert torch.equal(ids, single[side][0]) and torch.equal(valid, single[side][2])
            torch.testing.assert_close(score, single[side][1])
