"""Core mining costs: in-batch hard mining vs pytorch-metric-learning, and the faiss generator's index vs brute force.

Usage:
    pip install -e '.[bench]'          # pytorch-metric-learning, for the comparison only
    python benchmarks/core_mining.py [--threads 2] [--reps 30] [--sizes 10000,100000] [--dim 128] [--out FILE]

Prints a markdown report with two tables.

(a) Hard in-batch mining, B = 256 and 1024, D = 512, one class per pair (labels = arange(B)). ``hard-minibatch`` runs
    ``HardMinibatch.generate`` on a prepared :class:`negmine.MiningContext` whose score matrix is given: the trainer
    computes that matrix once per step for the loss and every generator reuses it. pytorch-metric-learning's
    ``BatchHardMiner`` gets the same embeddings in the cross-modal form ``miner(a, labels, ref_emb=b, ref_labels)``
    and computes its own distance matrix (its loss would compute another). Median of ``--reps`` runs after warm-up.
    Agreement: the fraction of anchors for which both pick the same hardest negative (PML with CosineSimilarity, the
    model's score here).

(b) The faiss generator's index (``negmine_faiss.generator.build_index``, inner product on L2-normalised vectors)
    over a Gaussian mixture of N items (N / 100 clusters), every item a query, 10 neighbours excluding the item
    itself. Build time (IVF training + adding) and query time are separate. Brute force is chunked torch matmul +
    topk, which also defines the true neighbours for recall@10. IVF is swept over nprobe; the first nprobe with
    recall >= 0.9 is marked.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from negmine.generator import MiningContext  # noqa: E402
from negmine.model import Batch, Embedding  # noqa: E402
from negmine.scoring import CosineScore  # noqa: E402
from negmine_faiss.generator import build_index, import_faiss  # noqa: E402
from negmine_hard_minibatch.generator import HardMinibatch  # noqa: E402

K_NEIGHBOURS = 10
SPREAD = 1.5  # within-cluster std relative to the spread of the centres
# pytorch-metric-learning 2.9 treats ``ref_labels is labels`` as "the same batch" and drops the diagonal from the
# positives; with one class per pair that removes every positive and BatchHardMiner returns no triplets at all. The
# cross-modal call must pass two distinct label tensors.
PML_SAME_LABELS = "pass ref_labels as a different tensor object than labels"


# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                             check=True).stdout.strip()
        measured = ["benchmarks/core_mining.py", "plugins/negmine_faiss", "plugins/negmine_hard_minibatch", "negmine"]
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *measured],
                               capture_output=True, text=True, cwd=ROOT, check=True).stdout.strip()
        return out + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def interleaved_median_ms(reps: int, calls: dict[str, tuple]) -> dict[str, float]:
    """Median wall time in ms of each ``(fn, *args)`` in ``calls``, run in turn within every repetition.

    Interleaving makes a burst of load from other processes hit every contender alike (the machine is shared).
    """
    for fn, *args in calls.values():
        for _ in range(3):  # warm-up
            fn(*args)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, (fn, *args) in calls.items():
            t0 = time.perf_counter()
            fn(*args)
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) * 1e3 for name, t in times.items()}


def timed(fn, *args):
    """(fn(*args), seconds)."""
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def best_of(runs: int, fn, *args):
    """(the first run's result, the fastest of ``runs`` runs in seconds)."""
    out, best = timed(fn, *args)
    for _ in range(runs - 1):
        best = min(best, timed(fn, *args)[1])
    return out, best


# ---------------------------------------------------------------------------------------------------------------------
# (a) in-batch hard mining
# ---------------------------------------------------------------------------------------------------------------------


def mining_context(a: torch.Tensor, b: torch.Tensor) -> MiningContext:
    """The context the trainer builds for one process: cosine score matrix given, each pair its own group."""
    n = a.shape[0]
    ids = torch.arange(n)
    matrix = CosineScore().pairwise(Embedding(a), Embedding(b))  # [B, B]: computed once per step for the loss
    return MiningContext(batch=Batch(a, b, ids), embeddings=(Embedding(a), Embedding(b)),
                         candidates=(Embedding(a), Embedding(b)), scores=(matrix.T, matrix), positive=ids,
                         exclude=ids[:, None] == ids[None, :], candidate_ids=ids, model=None, task=None, step=0,
                         margin=1.0, device=torch.device("cpu"))


def pml_hardest(miner, anchors: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """Long[B]: the hardest negative in ``refs`` of each anchor by PML's BatchHardMiner (-1 where none)."""
    labels = torch.arange(anchors.shape[0])
    a_idx, _, n_idx = miner(anchors, labels, refs, labels.clone())
    out = torch.full((anchors.shape[0],), -1, dtype=torch.long)
    out[a_idx] = n_idx
    return out


def pml_both_directions(miner, a: torch.Tensor, b: torch.Tensor):
    """Hardest negatives of both sides with one PML miner: anchors a against refs b, then b against a."""
    labels, ref_labels = torch.arange(a.shape[0]), torch.arange(a.shape[0])
    return miner(a, labels, b, ref_labels), miner(b, labels, a, ref_labels)


def bench_minibatch(reps: int) -> list[str]:
    try:
        from pytorch_metric_learning.distances import CosineSimilarity
        from pytorch_metric_learning.miners import BatchHardMiner
    except ImportError:
        return ["pytorch-metric-learning is not installed: `pip install -e '.[bench]'`; table (a) skipped.", ""]
    d = 512
    lines = [
        f"### (a) In-batch hardest negative, D = {d}, labels = arange(B) (median of {reps} interleaved runs, ms)",
        "",
        "| B | ours, 1 side | PML BatchHardMiner cosine, 1 direction | PML default (L2), 1 direction | "
        "ratio ours/PML (1 side) | ours, 2 sides | PML x2 directions | ratio (2 sides) | "
        "score matrix alone (paid once per step for the loss) | same hardest negative |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for b in (256, 1024):
        gen = torch.Generator().manual_seed(b)
        a = torch.randn(b, d, generator=gen)
        pos = a + 0.8 * torch.randn(b, d, generator=gen)  # paired views: positives are near, negatives vary
        ctx = mining_context(a, pos)
        one = HardMinibatch(HardMinibatch.Options(k=1, sides="b"))
        both = HardMinibatch(HardMinibatch.Options(k=1))
        pml_cos = BatchHardMiner(distance=CosineSimilarity())
        pml_l2 = BatchHardMiner()
        labels, ref_labels = torch.arange(b), torch.arange(b)  # two objects: see PML_SAME_LABELS
        t = interleaved_median_ms(reps, {
            "one": (one.generate, ctx),
            "both": (both.generate, ctx),
            "matrix": (CosineScore().pairwise, Embedding(a), Embedding(pos)),
            "pml": (pml_cos, a, labels, pos, ref_labels),
            "pml_l2": (pml_l2, a, labels, pos, ref_labels),
            "pml2": (pml_both_directions, pml_cos, a, pos),
        })
        t_one, t_both, t_matrix, t_pml, t_pml_l2, t_pml2 = (
            t[key] for key in ("one", "both", "matrix", "pml", "pml_l2", "pml2"))
        ours = both.generate(ctx)
        # side 1: impostor b_j for anchor a_i (PML anchors a, refs b); side 0: impostor a_j for anchor b_i
        agree_1 = (ours[1].index[:, 0] == pml_hardest(pml_cos, a, pos)).float().mean().item()
        agree_0 = (ours[0].index[:, 0] == pml_hardest(pml_cos, pos, a)).float().mean().item()
        agree_l2 = (ours[1].index[:, 0] == pml_hardest(pml_l2, a, pos)).float().mean().item()
        ratios.append(t_one / t_pml)
        lines.append(
            f"| {b} | {t_one:.3f} | {t_pml:.3f} | {t_pml_l2:.3f} | **{t_one / t_pml:.2f}** | {t_both:.3f} | "
            f"{t_pml2:.3f} | **{t_both / t_pml2:.2f}** | {t_matrix:.3f} | {100 * agree_1:.1f}% / {100 * agree_0:.1f}% "
            f"(L2: {100 * agree_l2:.1f}%) |"
        )
    lines += [
        "",
        "Ours reads the score matrix the trainer already computed for the loss; PML computes its own distance matrix "
        "(and a PML loss would compute another). The score-matrix column is what computing that matrix costs, for "
        "reference (ours + matrix is the cost of a standalone use). PML's cross-modal call needs two distinct label tensors "
        "(`ref_labels is labels` drops every positive when each item is its own class). Same hardest negative: side b / side a against PML with "
        "CosineSimilarity (the model's score), and side b against PML's default normalised L2 distance (same order "
        "as cosine up to float rounding). Goal: ratio <= 0.5 "
        f"({'met' if max(ratios) <= 0.5 else 'NOT met'} at one side).",
        "",
    ]
    return lines


# ---------------------------------------------------------------------------------------------------------------------
# (b) corpus index
# ---------------------------------------------------------------------------------------------------------------------


def mixture(n: int, d: int, seed: int) -> np.ndarray:
    """Float32[n, d] L2-normalised points of a Gaussian mixture with n // 100 clusters (centres ~ N(0, I), points
    ~ N(centre, SPREAD^2 I)): overlapping clusters, so IVF lists do not simply coincide with the mixture components."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(1, n // 100), d, generator=gen)
    which = torch.randint(0, centres.shape[0], (n,), generator=gen)
    x = centres[which] + SPREAD * torch.randn(n, d, generator=gen)
    return np.ascontiguousarray(torch.nn.functional.normalize(x, dim=1).numpy())


def brute_force(x: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Long[n, k]: exact top-k inner-product neighbours of every row, excluding itself (chunked torch)."""
    t = torch.from_numpy(x)
    out = []
    for start in range(0, t.shape[0], chunk):
        s = t[start : start + chunk] @ t.T
        rows = torch.arange(s.shape[0])
        s[rows, rows + start] = float("-inf")
        out.append(s.topk(k, dim=1).indices)
    return torch.cat(out).numpy()


def drop_self(ids: np.ndarray, k: int) -> np.ndarray:
    """From [n, k+1] search results to [n, k] without the query's own id (the last hit goes when it is absent)."""
    n = ids.shape[0]
    is_self = ids == np.arange(n)[:, None]
    key = np.where(is_self, ids.shape[1] + 1, np.arange(ids.shape[1])[None, :])
    return np.take_along_axis(ids, np.argsort(key, axis=1, kind="stable")[:, :k], axis=1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float((found[:, :, None] == truth[:, None, :]).any(axis=2).mean())


def bench_index(sizes: list[int], d: int, reps: int) -> list[str]:
    k = K_NEIGHBOURS
    lines = [
        f"### (b) faiss generator index, Gaussian mixture (N/100 clusters, within-cluster std {SPREAD} x the centres' "
        f"spread, L2-normalised), D = {d}, all N items as queries, "
        f"recall@{k} of the exact neighbours (self excluded)",
        "",
        "| N | method | build (s) | query (s) | query speed-up vs brute force | recall@10 |",
        "|---|---|---|---|---|---|",
    ]
    verdicts = []
    for n in sizes:
        x = mixture(n, d, seed=n)
        q_reps = 3 if n <= 20000 else 1
        truth, t_bf = best_of(q_reps, brute_force, x, k)
        lines.append(f"| {n:,} | brute force (torch matmul + topk, chunks of 1024) | - | {t_bf:.2f} | 1.0x | 1.000 |")
        flat, t_build = timed(build_index, x, "Flat")
        (_, found), t_q = best_of(q_reps, flat.search, x, k + 1)
        lines.append(f"| {n:,} | Flat | {t_build:.2f} | {t_q:.2f} | {t_bf / t_q:.1f}x | "
                     f"{recall(drop_self(found, k), truth):.3f} |")
        nlist = 1024 if n >= 50000 else 256
        spec = f"IVF{nlist},Flat"
        ivf, t_build = timed(build_index, x, spec)
        marked = False
        for nprobe in (1, 2, 4, 8, 16, 32, 64):
            ivf.nprobe = nprobe
            (_, found), t_q = best_of(q_reps, ivf.search, x, k + 1)
            r = recall(drop_self(found, k), truth)
            mark = ""
            if r >= 0.9 and not marked:
                marked = True
                mark = " **<- first nprobe with recall >= 0.9**"
                verdicts.append((n, nprobe, t_bf / t_q, r))
            lines.append(f"| {n:,} | {spec} nprobe={nprobe}{mark} | {t_build:.2f} | {t_q:.2f} | {t_bf / t_q:.1f}x | "
                         f"{r:.3f} |")
    lines.append("")
    for n, nprobe, speed, r in verdicts:
        ok = "met" if speed >= 5 and r >= 0.9 else "NOT met"
        lines.append(f"- N = {n:,}: IVF nprobe={nprobe} queries {speed:.1f}x faster than brute force at recall "
                     f"{r:.3f} (goal at 100k: >= 5x at >= 0.9: {ok if n >= 100000 else 'n/a'}).")
    lines += [
        "- Build = IVF k-means training + adding (Flat: adding only). Brute force needs no build. Query times are the "
        f"best of {3} runs at N <= 20k, one run above.",
        "",
    ]
    return lines


# ---------------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch and faiss threads")
    parser.add_argument("--reps", type=int, default=30, help="repetitions of each in-batch mining timing")
    parser.add_argument("--sizes", default="10000,100000", help="corpus sizes for table (b)")
    parser.add_argument("--dim", type=int, default=128, help="dimension of the corpus vectors")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    faiss = import_faiss()
    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    load = os.getloadavg()
    lines = [
        "## Core mining benchmark",
        "",
        f"- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`",
        f"- machine: {os.cpu_count()} CPUs (`nproc` {len(os.sched_getaffinity(0))}), {cpu_name()}; "
        f"{args.threads} threads for torch and faiss; load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"- python {platform.python_version()}, torch {torch.__version__}, faiss {faiss.__version__}, "
        f"pytorch-metric-learning {version('pytorch-metric-learning')}",
        f"- git commit {git_commit()}",
        "",
    ]
    lines += bench_minibatch(args.reps)
    lines += bench_index([int(s) for s in args.sizes.split(",") if s], args.dim, args.reps)
    lines.append(f"Total benchmark time {time.perf_counter() - t0:.0f} s; load average at end "
                 f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}.")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
