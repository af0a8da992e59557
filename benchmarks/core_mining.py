"""Core mining costs: in-batch hard mining vs pytorch-metric-learning, and the faiss generator's index vs brute force.

Usage:
    pip install -e '.[bench]'          # pytorch-metric-learning, for the comparison only
    python benchmarks/core_mining.py [--threads 1] [--reps 30] [--sizes 10000,100000] [--dim 128] [--out FILE]

Prints a markdown report with two tables.

(a) Hard in-batch mining, B = 256 and 1024, D = 512, one class per pair (labels = arange(B)), both sides. "Ours" is
    the whole path mining adds to a training step: ``negmine.trainer.mining_context`` (what the trainer builds only
    for generators) plus ``HardMinibatch.generate`` for both sides, given the score matrix the loss computed. It is
    timed with the previous implementation (inlined), a plain masked max, two reading passes, PML's
    ``BatchHardMiner`` (both directions, computing its own distances) and the matmul ``a @ b.T``, interleaved with
    a rotating order; medians of ``--reps``; every time is also printed as a multiple of the matmul. Agreement with
    PML and with the previous implementation is checked on fresh embeddings, with and without ties.

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
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from negmine.experiment import machine_record  # noqa: E402
from negmine.model import Batch, Embedding, TensorPairs  # noqa: E402
from negmine.scoring import CosineScore  # noqa: E402
from negmine.trainer import mining_context  # noqa: E402
from negmine_faiss.generator import build_index, import_faiss  # noqa: E402
from negmine_hard_minibatch.generator import HardMinibatch  # noqa: E402

CPU = torch.device("cpu")
NEG_INF = float("-inf")
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


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def interleaved_median_ms(reps: int, calls: dict[str, tuple]) -> dict[str, float]:
    """Median wall time in ms of each ``(fn, *args)`` in ``calls``, run in turn within every repetition.

    Interleaving makes a burst of load from other processes hit every contender alike (the machine is shared), and
    shuffling the order (seeded) spreads the cold cache after a large contender over all of them. (A rotation of a
    fixed order, used before, keeps every contender behind the same one: the contender listed after the matmul
    always found the matrix evicted by the matmul's inputs, 0.1-0.25 ms at B = 256.)
    """
    for fn, *args in calls.values():
        for _ in range(3):  # warm-up
            fn(*args)
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    order = random.Random(0)
    for _ in range(reps):
        order.shuffle(names)  # whoever runs right after a large contender finds a cold cache: each as often
        for name in names:
            fn, *args = calls[name]
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


def step_inputs(a: torch.Tensor, b: torch.Tensor) -> dict:
    """What Trainer._train_step holds before mining, in one process: the batch, both sides' encodings and the cosine
    score matrix it computed for the loss (scores_a = matrix.T, a view)."""
    n = a.shape[0]
    ids = torch.arange(n)
    emb = (Embedding(a), Embedding(b))
    matrix = CosineScore().pairwise(*emb)
    return {"batch": Batch(a, b, ids), "emb": emb, "matrix": matrix, "positive": ids, "ids": ids}


def ours_whole_path(x: dict, gen: HardMinibatch, task: object = None) -> dict:
    """Everything mining adds to a step: the trainer's context (negmine.trainer.mining_context, the function the
    trainer calls; with a ``task`` whose training split has labels, its false-negative mask too) and ``generate``
    for both sides."""
    ctx = mining_context(x["batch"], x["emb"], x["emb"], (x["matrix"].T, x["matrix"]), x["positive"], x["ids"],
                         x["batch"].group_ids, None, task, 0, 1.0, CPU)
    return gen.generate(ctx)


def previous_whole_path(x: dict, k: int = 1) -> list:
    """The implementation before issue 18, inlined: the trainer built a B x B exclusion mask and a contiguous copy of
    the transposed scores; hard-minibatch inverted the mask, applied it with masked_fill and took the top-k; the
    base class validated with the mask."""
    batch, matrix = x["batch"], x["matrix"]
    cand_ids, cand_groups = batch.ids, batch.group_ids
    exclude = (batch.ids[:, None] == cand_ids[None, :]) | (batch.group_ids[:, None] == cand_groups[None, :])
    scores = (matrix.T.detach().contiguous(), matrix.detach())
    out = []
    for side in (0, 1):
        masked = scores[side].masked_fill(~(~exclude), NEG_INF)
        top = masked.topk(k, dim=1)
        index, valid = top.indices, top.values > NEG_INF
        idx = index[valid]  # the base class's validation as it was
        if idx.numel() and (idx.min() < 0 or idx.max() >= exclude.shape[1]):
            raise AssertionError
        if (exclude.gather(1, index.clamp(0, exclude.shape[1] - 1).long()) & valid).any():
            raise AssertionError
        out.append((index, scores[side].gather(1, index), valid))
    return out


def plain_masked_max(matrix: torch.Tensor, eye: torch.Tensor) -> tuple:
    """The plain baseline: a masked copy and a row max per side (the mask given)."""
    return matrix.masked_fill(eye, NEG_INF).max(dim=1), matrix.T.masked_fill(eye, NEG_INF).max(dim=1)


def read_floor(matrix: torch.Tensor) -> tuple:
    """Two reading passes over the matrix, nothing written: a row max and a column max (what no exact method can
    undercut: every score must be read once per side)."""
    return matrix.max(dim=1), matrix.max(dim=0)


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


def agreement(b: int, d: int, ties: bool) -> tuple[float, float]:
    """(share of anchors, both sides, where ours picks PML's hardest negative; share of anchors, both sides, where
    ours equals the previous implementation in index, score and validity) on fresh embeddings; ``ties``: embeddings
    rounded to one bit per unit, so many scores are equal."""
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.miners import BatchHardMiner

    gen = torch.Generator().manual_seed(1000 + b)
    a = torch.randn(b, d, generator=gen)
    pos = a + 0.8 * torch.randn(b, d, generator=gen)
    if ties:
        a, pos = a.sign(), pos.sign()
    x = step_inputs(a, pos)
    ours = ours_whole_path(x, HardMinibatch(HardMinibatch.Options(k=1)))
    pml = BatchHardMiner(distance=CosineSimilarity())
    same_pml = ((ours[1].index[:, 0] == pml_hardest(pml, a, pos)).float().mean()
                + (ours[0].index[:, 0] == pml_hardest(pml, pos, a)).float().mean()) / 2
    prev = previous_whole_path(x)
    same_prev = sum(((ours[s].index == prev[s][0]) & (ours[s].score == prev[s][1])
                     & (ours[s].valid == prev[s][2])).all(1).float().mean() for s in (0, 1)) / 2
    return float(same_pml), float(same_prev)


def bench_minibatch(reps: int) -> list[str]:
    try:
        from pytorch_metric_learning.distances import CosineSimilarity
        from pytorch_metric_learning.miners import BatchHardMiner
    except ImportError:
        return ["pytorch-metric-learning is not installed: `pip install -e '.[bench]'`; table (a) skipped.", ""]
    d = 512
    lines = [
        f"### (a) In-batch hardest negative, both sides, D = {d}, labels = arange(B) "
        f"(median of {reps} interleaved runs, ms; x = multiples of the B x B x D matmul)",
        "",
        "| B | matmul `a @ b.T` | ours: whole mining path | previous implementation, whole path | plain masked max "
        "(mask given) | read floor (row max + column max) | PML BatchHardMiner cosine, both directions | "
        "ours / plain masked max | ours / PML |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdict = {}
    for b in (256, 1024):
        gen = torch.Generator().manual_seed(b)
        a = torch.randn(b, d, generator=gen)
        pos = a + 0.8 * torch.randn(b, d, generator=gen)  # paired views: positives are near, negatives vary
        x = step_inputs(a, pos)
        both = HardMinibatch(HardMinibatch.Options(k=1))
        pml_cos = BatchHardMiner(distance=CosineSimilarity())
        eye = torch.eye(b, dtype=torch.bool)
        t = interleaved_median_ms(reps, {
            "matmul": (torch.matmul, a, pos.T),
            "ours": (ours_whole_path, x, both),
            "previous": (previous_whole_path, x),
            "plain": (plain_masked_max, x["matrix"], eye),
            "floor": (read_floor, x["matrix"]),
            "pml2": (pml_both_directions, pml_cos, a, pos),
        })
        mm = t["matmul"]

        def cell(key, t=t, mm=mm):
            return f"{t[key]:.3f} ({t[key] / mm:.2f}x)"

        verdict[b] = (t["ours"] / mm, t["ours"] / t["plain"])
        lines.append(f"| {b} | {mm:.3f} | **{cell('ours')}** | {cell('previous')} | {cell('plain')} | "
                     f"{cell('floor')} | {cell('pml2')} | **{t['ours'] / t['plain']:.2f}** | "
                     f"{t['ours'] / t['pml2']:.2f} |")
    lines.append("")
    for ties in (False, True):
        for b in (7, 64, 257, 1024):
            same_pml, same_prev = agreement(b, d, ties)
            lines.append(f"- B = {b}{', embeddings of +-1 (many tied scores)' if ties else ''}: ours picks PML's "
                         f"hardest negative for {100 * same_pml:.1f}% of anchors; equals the previous implementation "
                         f"(index, score, validity) for {100 * same_prev:.1f}%.")
    ok_1024 = verdict[1024][0] <= 0.3
    ok_256 = verdict[256][1] <= 1.5
    lines += [
        "",
        "Whole mining path = what the trainer builds only for generators (`negmine.trainer.mining_context`: detached "
        "views, no exclusion mask, no copy) plus `HardMinibatch.generate` for both sides (per side a copy of the "
        "scores in their own layout, side a's transposed view included, with the excluded pairs written to -inf; "
        "the first maximum of each row in four vectorised passes, torch.topk's choice bit for bit; the base "
        "class's shape checks, hard-minibatch's values being valid by construction). The previous "
        "implementation also built the B x B exclusion mask, inverted it, copied the transposed scores and "
        "masked them again. PML computes its own distance matrix (and a PML loss would compute another); the "
        "matmul and PML columns do not include the loss's own score matrix. With ties, PML (torch.max) takes the "
        "lowest index and ours torch.topk's choice, exactly as the previous implementation did; they then may "
        "differ. Goals: whole path <= 0.3 matmuls at B = 1024 "
        f"({verdict[1024][0]:.2f}: {'met' if ok_1024 else 'NOT met'}), <= 1.5x the plain masked max at B = 256 "
        f"({verdict[256][1]:.2f}: {'met' if ok_256 else 'NOT met'}).",
        "",
    ]
    return lines


class _LabelledTask:
    """The one attribute of a task that mining_context reads: the training split (here with class labels)."""

    def __init__(self, train: TensorPairs) -> None:
        self.train = train


def labelled_inputs(b: int, d: int, per_class: int = 8) -> tuple[dict, _LabelledTask, torch.Tensor]:
    """(step inputs, a task whose training split holds Bool[B, B / per_class] one-hot labels, the classes Long[B])
    for B pairs whose anchors are near their class's centre."""
    gen = torch.Generator().manual_seed(2000 + b)
    classes = torch.arange(b) % max(1, b // per_class)
    centres = torch.randn(int(classes.max()) + 1, d, generator=gen)
    a = centres[classes] + torch.randn(b, d, generator=gen)
    pos = a + 0.8 * torch.randn(b, d, generator=gen)
    labels = torch.nn.functional.one_hot(classes).bool()
    return step_inputs(a, pos), _LabelledTask(TensorPairs(a, pos, labels=labels)), classes


def pml_with_classes(miner, a: torch.Tensor, b: torch.Tensor, classes: torch.Tensor):
    """PML's hardest negatives of both sides given one class per item (negatives: another class)."""
    return miner(a, classes, b, classes.clone()), miner(b, classes, a, classes.clone())


def bench_false_negatives(reps: int) -> list[str]:
    try:
        from pytorch_metric_learning.distances import CosineSimilarity
        from pytorch_metric_learning.miners import BatchHardMiner
    except ImportError:
        return ["pytorch-metric-learning is not installed: `pip install -e '.[bench]'`; table (c) skipped.", ""]
    d = 512
    lines = [
        f"### (c) In-batch hardest negative with false negatives beyond groups: B / 8 classes of 8 pairs as labels, "
        f"both sides, D = {d} (median of {reps} interleaved runs, ms)",
        "",
        "| B | matmul `a @ b.T` | ours, no labels | ours with the label mask (built and applied) | "
        "PML BatchHardMiner cosine with class labels, both directions | labels / no labels | ours with labels / PML "
        "| anchors where ours = PML's hardest | anchors given one of their class |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in (256, 1024):
        x, task, classes = labelled_inputs(b, d)
        a, pos = x["emb"][0].values, x["emb"][1].values
        gen = HardMinibatch(HardMinibatch.Options(k=1))
        pml = BatchHardMiner(distance=CosineSimilarity())
        t = interleaved_median_ms(reps, {
            "matmul": (torch.matmul, a, pos.T),
            "plain": (ours_whole_path, x, gen),
            "labels": (ours_whole_path, x, gen, task),
            "pml": (pml_with_classes, pml, a, pos, classes),
        })
        ours = ours_whole_path(x, gen, task)
        (_, _, n_b), (_, _, n_a) = (pml(a, classes, pos, classes.clone()), pml(pos, classes, a, classes.clone()))
        same = ((ours[1].index[:, 0] == n_b).float().mean() + (ours[0].index[:, 0] == n_a).float().mean()) / 2
        wrong = sum(int((classes[ours[s].index[:, 0]] == classes).sum()) for s in (0, 1))
        lines.append(f"| {b} | {t['matmul']:.3f} | {t['plain']:.3f} | **{t['labels']:.3f}** | {t['pml']:.3f} | "
                     f"{t['labels'] / t['plain']:.2f} | **{t['labels'] / t['pml']:.2f}** | {100 * float(same):.1f}% | "
                     f"{wrong} of {2 * b} |")
    lines += [
        "",
        "PML's miner returns one triplet per anchor with a positive and a negative; every anchor here has both, "
        "so its hardest negative is defined for all of them. The label mask (TensorPairs.false_negatives -> "
        "negmine.model.shared_labels) joins the batch's (item, label) entries on the label, O(nnz + marked pairs), "
        "then the context writes the id and group pairs into it and the generator masks its copy of the scores "
        "with it; at commit 7431c67 a dense `labels @ labels.T > 0` and B x N id and group comparisons took "
        "21.1 ms at B = 1024 (4.6x no labels) in the same benchmark.",
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
    parser.add_argument("--threads", type=int, default=1, help="torch and faiss threads")
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
        f"- git commit {machine_record()['commit']}",
        "",
    ]
    lines += bench_minibatch(args.reps)
    lines += bench_false_negatives(args.reps)
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
