"""Corpus negatives with dense maps: peak memory of the in-memory vs on-disk cache, and a refresh on 1 vs 2 ranks.

Usage:
    python benchmarks/corpus_scale_cache.py memory [--sizes 10000,100000] [--stores memory,disk] [--out FILE]
    python benchmarks/corpus_scale_cache.py ranks [--n 100000] [--repeats 3] [--out FILE]

``memory``: a free encoder emitting DaveNet-sized dense maps (side b: a 128 x 64 "audio" map per item with lengths,
side a: a 128 x 2 x 2 "image" map; MISA matchmap score), side b indexed (exact Flat, no recall check, so the rows
measure the cache), ``cache_dtype=float16``. Each row is a fresh process: it builds the data, runs one
``FaissNegatives.refresh`` and mines 5 batches of 256 anchors (32 candidates each, re-scored on the cache), and
reports its peak resident memory (``ru_maxrss``) after the data, after the refresh and after mining, and the
resident memory at the end split into anonymous and file-backed pages.

``ranks``: the time of one refresh (encode + Flat index of both sides, no recall check) with 1 process vs 2 gloo
ranks (torch.distributed, ``mp.spawn`` as in tests/integration/test_faiss_distributed.py), each rank one thread and
encoding half of the corpus with a small MLP (64-512-512-64 per side, D = 64 vectors), for both cache stores. Each
configuration is timed ``--repeats`` times in the same processes (the minimum and all runs reported).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))


def rss_mb() -> float:
    """Peak resident memory of this process so far (MB), anonymous and file-backed pages together."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_now() -> dict[str, float]:
    """The current resident memory (MB) by kind: RssAnon (heap, tensors) and RssFile (mapped file pages)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


# -- memory -------------------------------------------------------------------------------------------------------------


def dense_task(n: int, dim: int = 128, frames: int = 64):
    import torch

    from negmine import DualEncoder, Embedding, Task, TensorPairs
    from negmine.scoring import MatchmapScore

    class DenseMaps(DualEncoder):
        """Free towers with DaveNet's output sizes: x Float[B, 128] -> a [B, 128, 2, 2] image map (side a) or a
        [B, 128, 64] frame map with lengths 64 (side b); every frame a scaled copy of x, so the work is the cache."""

        def __init__(self):
            super().__init__(MatchmapScore())
            self.register_buffer("grid", torch.linspace(0.5, 1.5, 4).view(1, 1, 2, 2))
            self.register_buffer("wave", torch.cos(torch.arange(frames) / 7.0).view(1, 1, frames))

        def encode(self, side, inputs):
            if side == 0:
                return Embedding(inputs[:, :, None, None] * self.grid)
            lengths = torch.full((inputs.shape[0],), frames, dtype=torch.long)
            return Embedding(inputs[:, :, None] * self.wave, lengths)

    gen = torch.Generator().manual_seed(n)
    x = torch.nn.functional.normalize(torch.randn(n, dim, generator=gen), dim=1)
    data = TensorPairs(x + 0.05 * torch.randn(n, dim, generator=gen), x)
    return Task("dense-scale", DenseMaps(), data, data, provides=frozenset({"corpus"})), gen


def one_memory(n: int, store: str, cache_dir: str | None) -> dict:
    import torch

    from negmine.trainer import mining_context
    from negmine_faiss.generator import FaissNegatives, import_faiss

    torch.set_num_threads(1)
    import_faiss().omp_set_num_threads(1)
    task, gen = dense_task(n)
    data = task.train
    after_data = rss_mb()
    options = dict(sides="b", recall_sample=0, cache_dtype="float16", encode_batch=1024, cache_store=store)
    if store == "disk" and cache_dir:
        options["cache_dir"] = cache_dir
    faiss_gen = FaissNegatives(FaissNegatives.Options(**options), task=task)
    t0 = time.perf_counter()
    faiss_gen.refresh(task.model, data, torch.device("cpu"), [1])
    refresh = time.perf_counter() - t0
    after_refresh = rss_mb()
    cache = faiss_gen.indexes[1].cache
    cache_bytes = cache.nbytes if store == "disk" else cache.values.numel() * cache.values.element_size()
    faiss_gen._hooked = True
    times = []
    for i in range(5):  # a different batch each time: new candidate rows are read from the store
        batch = data.batch(torch.randperm(n, generator=gen)[:256])
        with torch.no_grad():
            ea, eb = task.model.encode(0, batch.a), task.model.encode(1, batch.b)
            m = task.model.score_matrix(ea, eb)
        ctx = mining_context(batch, (ea, eb), (ea, eb), (m.T, m), torch.arange(256), batch.ids, batch.group_ids,
                             task.model, task, i, 1.0, torch.device("cpu"))
        t1 = time.perf_counter()
        faiss_gen.generate(ctx)
        times.append(time.perf_counter() - t1)
    out = {"n": n, "store": store, "refresh_s": refresh, "mine_ms": 1e3 * sorted(times)[2],
           "cache_gb": cache_bytes / 1e9, "rss_data_mb": after_data, "rss_refresh_mb": after_refresh,
           "rss_peak_mb": rss_mb(), **rss_now()}
    faiss_gen._drop_indexes()
    return out


# -- ranks --------------------------------------------------------------------------------------------------------------


def mlp_task(n: int, dim: int = 64, hidden: int = 512):
    import torch

    from negmine import CosineScore, DualEncoder, Embedding, Task, TensorPairs

    class Towers(DualEncoder):
        def __init__(self):
            super().__init__(CosineScore())
            torch.manual_seed(0)
            self.towers = torch.nn.ModuleList(
                torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                                    torch.nn.ReLU(), torch.nn.Linear(hidden, dim)) for _ in range(2))

        def encode(self, side, inputs):
            return Embedding(self.towers[side](inputs))

    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, dim, generator=gen)
    data = TensorPairs(x + 0.1 * torch.randn(n, dim, generator=gen), x)
    return Task("mlp-scale", Towers(), data, data, provides=frozenset({"corpus"}))


def time_refreshes(n: int, store: str, repeats: int, cache_dir: str) -> list[float]:
    import torch
    import torch.distributed as dist

    from negmine_faiss.generator import FaissNegatives, import_faiss

    torch.set_num_threads(1)
    import_faiss().omp_set_num_threads(1)
    task = mlp_task(n)
    options = dict(recall_sample=0, encode_batch=1024, cache_store=store)
    if store == "disk":
        options["cache_dir"] = cache_dir
    gen = FaissNegatives(FaissNegatives.Options(**options), task=task)
    times = []
    for _ in range(repeats):
        if dist.is_initialized():
            dist.barrier()
        t0 = time.perf_counter()
        gen.refresh(task.model, task.train, torch.device("cpu"), [0, 1])
        if dist.is_initialized():
            dist.barrier()  # the refresh ends when the slowest rank is done
        times.append(time.perf_counter() - t0)
    gen._drop_indexes()
    return times


def _rank(rank: int, world: int, port: int, n: int, store: str, repeats: int, cache_dir: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        times = time_refreshes(n, store, repeats, cache_dir)
        if rank == 0:
            Path(out).write_text(json.dumps(times))
    finally:
        dist.destroy_process_group()


def one_ranks(world: int, n: int, store: str, repeats: int, cache_dir: str) -> list[float]:
    if world == 1:
        return time_refreshes(n, store, repeats, cache_dir)
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "times.json")
        mp.spawn(_rank, args=(world, port, n, store, repeats, cache_dir, out), nprocs=world, join=True)
        return json.loads(Path(out).read_text())


# -- driver -------------------------------------------------------------------------------------------------------------


def header(args: argparse.Namespace) -> list[str]:
    from negmine.experiment import machine_record

    commit = machine_record()['commit']  # flags uncommitted code changes itself
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return [f"- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`",
            f"- git commit {commit}; {os.cpu_count()} CPUs",
            f"- uptime at start: `{uptime}`"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("memory", "ranks"))
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--stores", default="memory,disk")
    parser.add_argument("--n", type=int, default=100000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", default=None, help="cache_store=disk's directory (default: $TMPDIR)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.one:
        n, store = args.one.split(":")
        print(json.dumps(one_memory(int(n), store, args.cache_dir)))
        return
    lines = header(args)
    if args.what == "memory":
        lines += ["", "| N | cache store | cache (GB) | refresh (s) | mine 256 anchors (ms) | RSS after data (MB) | "
                  "peak RSS after refresh (MB) | peak RSS after mining (MB) | RSS at end: anon / file (MB) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        print("\n".join(lines), flush=True)
        for n in [int(s) for s in args.sizes.split(",") if s]:
            for store in args.stores.split(","):
                cmd = [sys.executable, __file__, "memory", "--one", f"{n}:{store}"]
                if args.cache_dir:
                    cmd += ["--cache-dir", args.cache_dir]
                r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
                row = (f"| {n:,} | {store} | {r['cache_gb']:.2f} | {r['refresh_s']:.1f} | {r['mine_ms']:.0f} | "
                       f"{r['rss_data_mb']:.0f} | {r['rss_refresh_mb']:.0f} | {r['rss_peak_mb']:.0f} | "
                       f"{r['RssAnon']:.0f} / {r['RssFile']:.0f} |")
                lines.append(row)
                print(row, flush=True)
    else:
        import tempfile

        cache_dir = args.cache_dir or tempfile.gettempdir()
        lines += ["", "| cache store | ranks | refresh (s): min (each run) | ratio 1 rank / 2 ranks |",
                  "|---|---|---|---|"]
        print("\n".join(lines), flush=True)
        for store in args.stores.split(","):
            best = {}
            for world in (1, 2):
                times = one_ranks(world, args.n, store, args.repeats, cache_dir)
                best[world] = min(times)
                ratio = f"{best[1] / best[2]:.2f}" if world == 2 else "-"
                row = (f"| {store} | {world} | {best[world]:.2f} ({', '.join(f'{t:.2f}' for t in times)}) | "
                       f"{ratio} |")
                lines.append(row)
                print(row, flush=True)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines += ["", f"- uptime at end: `{uptime}`"]
    print(lines[-1])
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
