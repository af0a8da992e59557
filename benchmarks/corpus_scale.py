"""Corpus negatives at scale: the faiss generator's refresh, query time, peak memory and sampled recall vs N.

Usage:
    python benchmarks/corpus_scale.py [--sizes 10000,100000,1000000] [--dim 64] [--threads 1] [--out FILE]

Synthetic embeddings with a free encoder (the identity: side b is the point, side a the point plus a little noise),
so the times are the index's, not a model's. Two kinds: ``clustered`` (a Gaussian mixture of N/100 components,
within-component std 1.5x the centres' spread, as in core_mining.py) and ``uniform`` (isotropic Gaussian, normalised:
no structure for IVF to exploit). Every row runs ``FaissNegatives.refresh`` for side b with ``index=auto`` (exact
Flat below 50k items; IVF with ~4 sqrt(N) lists above, nprobe doubled from 1 until the sampled recall@10 of 256
queries reaches 0.9), then mines a batch of 256 anchors (search 32 candidates, re-score on the cached encodings,
``cache_dtype`` as given). Each row runs in a fresh process, so the peak resident memory (``ru_maxrss``) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(n: int, d: int, kind: str, cache_dtype: str, threads: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "plugins"))
    from negmine import CosineScore, DualEncoder, Embedding, Task, TensorPairs
    from negmine.trainer import mining_context
    from negmine_faiss.generator import FaissNegatives, import_faiss

    torch.set_num_threads(threads)
    import_faiss().omp_set_num_threads(threads)

    class Identity(DualEncoder):
        def __init__(self):
            super().__init__(CosineScore())

        def encode(self, side, inputs):
            return Embedding(inputs)

    gen = torch.Generator().manual_seed(n)
    if kind == "clustered":
        centres = torch.randn(max(1, n // 100), d, generator=gen)
        x = centres[torch.randint(0, centres.shape[0], (n,), generator=gen)] + 1.5 * torch.randn(n, d, generator=gen)
    else:
        x = torch.randn(n, d, generator=gen)
    x = torch.nn.functional.normalize(x, dim=1)
    data = TensorPairs(x + 0.05 * torch.randn(n, d, generator=gen), x)
    task = Task("scale", Identity(), data, data, provides=frozenset({"corpus"}))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    faiss_gen = FaissNegatives(FaissNegatives.Options(index="auto", nprobe=1, recall_target=0.9, sides="b",
                                                      cache_dtype=cache_dtype, encode_batch=4096), task=task)
    t0 = time.perf_counter()
    faiss_gen.refresh(task.model, data, torch.device("cpu"), [1])
    refresh = time.perf_counter() - t0
    t = faiss_gen.telemetry()
    batch = data.batch(torch.randperm(n, generator=gen)[:256])
    ea, eb = task.model.encode(0, batch.a), task.model.encode(1, batch.b)
    m = task.model.score_matrix(ea, eb)
    ctx = mining_context(batch, (ea, eb), (ea, eb), (m.T, m), torch.arange(256), batch.ids, batch.group_ids,
                         task.model, task, 0, 1.0, torch.device("cpu"))
    faiss_gen._hooked = True
    faiss_gen.generate(ctx)  # warm-up
    times = []
    for _ in range(5):
        t1 = time.perf_counter()
        faiss_gen.generate(ctx)
        times.append(time.perf_counter() - t1)
    ivf = __import__("faiss").try_extract_index_ivf(faiss_gen.indexes[1].index)
    return {
        "n": n, "kind": kind, "cache": cache_dtype,
        "index": "Flat" if ivf is None else f"IVF{ivf.nlist},Flat",
        "nprobe": t.get("faiss/nprobe"), "recall": t["faiss/index_recall"], "hardest": t["faiss/hardest_found"],
        "refresh_s": refresh, "mine_ms": 1e3 * sorted(times)[2],
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "base_mb": base_rss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--kinds", default="clustered,uniform")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", default="float16")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.one:
        n, kind = args.one.split(":")
        print(json.dumps(one(int(n), args.dim, kind, args.cache, args.threads)))
        return
    from negmine.experiment import machine_record

    commit = machine_record()['commit']
    load = os.getloadavg()
    lines = [
        "## Corpus scale benchmark",
        "",
        f"- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`",
        f"- machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; {args.threads} thread(s) "
        f"for torch and faiss; load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"- git commit {commit.strip()}; D = {args.dim}, cache {args.cache}",
        "",
        "| N | data | index (auto) | nprobe reached | sampled recall@10 | hardest found | refresh (s) | "
        "mine 256 anchors (ms) | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for n in [int(s) for s in args.sizes.split(",") if s]:
        for kind in args.kinds.split(","):
            cmd = [sys.executable, __file__, "--one", f"{n}:{kind}", "--dim", str(args.dim), "--threads",
                   str(args.threads), "--cache", args.cache]
            r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            row = (f"| {n:,} | {kind} | {r['index']} | {r['nprobe'] or '-'} | {r['recall']:.3f} | "
                   f"{r['hardest']:.3f} | {r['refresh_s']:.1f} | {r['mine_ms']:.1f} | {r['peak_mb']:.0f} |")
            lines.append(row)
            print(row, flush=True)
    load = os.getloadavg()
    lines += ["", f"Load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}."]
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
