"""ANCE-style corpus negatives: a FAISS index over the training set, rebuilt with the current model during training.

For every side s that gets negatives the generator keeps one index over the pooled side-s encodings of the whole
training split. The side-s negatives of pair i are found by searching that index with pair i's *other* side, encoded
fresh in the current step; the ``candidates`` nearest items are re-scored with the model's true score against the
cached (unpooled) corpus encodings, items sharing the anchor's id or group (or marked by the split's
``false_negatives``) are dropped, and ``k`` negatives are taken from a rank window of what is left. The trainer
then loads those dataset ids and encodes them with gradient.

Life cycle: the index is built at ``negmine_stage_start`` (also when a stage is resumed: an index is never stored in a
checkpoint) and rebuilt every ``refresh_every`` steps in ``negmine_step_end``. When the generator is used without a
plugin manager (no hooks), the same schedule runs lazily inside :meth:`FaissNegatives.mine`.

With ``refresh=async`` (ANCE-style) the rebuilds after the stage start run in a background thread from a snapshot of
the encoder's weights while the previous (stale) index keeps serving; see :class:`FaissNegatives` for when the new
index is swapped in, what is deterministic, and resume.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor

from negmine import hookimpl
from negmine.errors import NegmineError, PluginError
from negmine.generator import (
    SIDE_CHOICES,
    MiningContext,
    NegativeGenerator,
    Negatives,
    option,
    split_false_negatives,
)
from negmine.model import Embedding, PairedDataset, to_device

from .store import DiskEmbeddings, release

NEG_INF = float("-inf")
FAISS_HINT = "install it with `pip install faiss-cpu` (or `conda install -c pytorch faiss-cpu`)"


def import_faiss() -> Any:
    """Import faiss or fail with the command that fixes it."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency of negmine
        raise PluginError(f"the 'faiss' generator needs the faiss library, which is not importable ({exc}); "
                          f"{FAISS_HINT}") from exc
    return faiss


def as_faiss_array(x: Tensor) -> np.ndarray:
    """Float[N, D] tensor on any device -> C-contiguous float32 numpy array on the CPU (what faiss accepts)."""
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())


def build_index(vectors: np.ndarray, spec: str = "Flat", nprobe: int = 1) -> Any:
    """An inner-product FAISS index over ``vectors`` Float[N, D] from a factory string; trained on them if needed.

    Ids in the index are the row numbers of ``vectors``. ``nprobe`` is applied when the index has an IVF level.
    """
    faiss = import_faiss()
    n, d = vectors.shape
    try:
        index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise PluginError(f"faiss: invalid index factory string {spec!r} for dimension {d}: "
                          f"{str(exc).strip().splitlines()[-1]}. Examples: 'Flat', 'IVF256,Flat', 'HNSW32'") from exc
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and ivf.nlist > n:
        raise PluginError(f"faiss: index {spec!r} has {ivf.nlist} lists but the corpus has only {n} items; "
                          f"use fewer lists (IVF{max(1, int(4 * n**0.5))},Flat is typical) or 'Flat'")
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    if ivf is not None:
        ivf.nprobe = min(nprobe, ivf.nlist)
    return index


def auto_spec(n: int, exact_below: int = 50000) -> str:
    """The factory string ``index=auto`` uses for n items: ``Flat`` below ``exact_below``, else IVF with about
    4 sqrt(n) lists (a power of two; faiss wants at least ~39 training points per list, which n/4sqrt(n) gives
    from n = 25k)."""
    if n < exact_below:
        return "Flat"
    return f"IVF{2 ** max(1, round(np.log2(4 * np.sqrt(n))))},Flat"


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(scores Float[S, k], ids Long[S, k]): the exact inner-product top-k of each query over ``vectors`` Float[N, D],
    by chunked torch matmul (memory O(S x chunk))."""
    q = torch.from_numpy(queries)
    best_s = torch.full((q.shape[0], 0), NEG_INF)
    best_i = torch.zeros((q.shape[0], 0), dtype=torch.long)
    for start in range(0, vectors.shape[0], chunk):
        s = q @ torch.from_numpy(vectors[start : start + chunk]).T
        top = s.topk(min(k, s.shape[1]), dim=1)
        best_s = torch.cat([best_s, top.values], 1)
        best_i = torch.cat([best_i, top.indices + start], 1)
        keep = best_s.topk(min(k, best_s.shape[1]), dim=1)
        best_s, best_i = keep.values, best_i.gather(1, keep.indices)
    return best_s.numpy(), best_i.numpy()


def tune_and_measure(index: Any, vectors: np.ndarray, queries: np.ndarray, query_ids: np.ndarray,
                     groups: np.ndarray, k: int = 10, target: float | None = None) -> dict[str, float]:
    """Sampled quality of ``index`` over ``vectors`` Float[N, D], for ``queries`` Float[S, D] (the other side of the
    corpus items ``query_ids`` Long[S]; ``groups`` Long[N] the corpus groups).

    Returns ``index_recall`` (the mean share of each query's exact k nearest items, its own group left out, that the
    index returns among its k nearest allowed ones), ``hardest_found`` (the share of queries whose hardest allowed item
    from the index is the exact hardest, a tie counted as found), ``sampled`` and, for an IVF index, ``nprobe``.
    With ``target``, an IVF index's nprobe is doubled (up to its list count) until index_recall reaches it.
    """
    faiss = import_faiss()
    depth = k + int(np.unique(groups, return_counts=True)[1].max())  # room for the query's own group, which is never a negative
    exact_s, exact_i = exact_topk(vectors, queries, depth)
    allowed = groups[exact_i] != groups[query_ids][:, None]
    truth = [row[ok][:k] for row, ok in zip(exact_i, allowed, strict=True)]
    best = np.array([row[ok][0] if ok.any() else NEG_INF for row, ok in zip(exact_s, allowed, strict=True)])
    ivf = faiss.try_extract_index_ivf(index)

    def measure() -> dict[str, float]:
        scores, ids = index.search(queries, min(depth, index.ntotal))
        ok = (ids >= 0) & (groups[np.maximum(ids, 0)] != groups[query_ids][:, None])
        found = [row[m][:k] for row, m in zip(ids, ok, strict=True)]
        recall = np.mean([len(set(f.tolist()) & set(t.tolist())) / max(1, len(t))
                          for f, t in zip(found, truth, strict=True)])
        top = np.array([row[m][0] if m.any() else NEG_INF for row, m in zip(scores, ok, strict=True)])
        hardest = np.mean(top >= best - 1e-6 * np.maximum(1.0, np.abs(best)))
        out = {"index_recall": float(recall), "hardest_found": float(hardest), "sampled": float(len(queries))}
        if ivf is not None:
            out["nprobe"] = float(ivf.nprobe)
        return out

    quality = measure()
    while target is not None and ivf is not None and quality["index_recall"] < target and ivf.nprobe < ivf.nlist:
        ivf.nprobe = min(ivf.nlist, ivf.nprobe * 2)
        quality = measure()
    return quality


def _false_negatives(ctx: MiningContext, ids: Tensor) -> Tensor:
    """Bool[B, C]: the training split's extra exclusions (``PairedDataset.false_negatives``) for each anchor's
    candidate ids Long[B, C] (all False when the split marks none); asked once for the distinct ids."""
    distinct, where = ids.unique(return_inverse=True)  # where: Long[B, C], positions in distinct
    marked = split_false_negatives(getattr(ctx.task, "train", None), ctx.batch.ids, distinct, ids.device)
    if marked is None:
        return torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
    return marked.gather(1, where)


def corpus_groups(data: PairedDataset, batch_size: int = 1024) -> Tensor:
    """Long[N]: the group id of every item of a split (a ``groups`` attribute if the dataset has one, else loaded)."""
    n = len(data)
    groups = getattr(data, "groups", ...)
    if groups is None:  # TensorPairs without groups: every item is its own group
        return torch.arange(n)
    if isinstance(groups, (Tensor, np.ndarray, list, tuple)) and len(groups) == n:
        return torch.as_tensor(groups).long().cpu()
    parts = [data.batch(torch.arange(s, min(n, s + batch_size))).group_ids.long().cpu() for s in range(0, n, batch_size)]
    return torch.cat(parts)


@torch.no_grad()
def encode_corpus(model: Any, data: PairedDataset, side: int, device: torch.device, batch_size: int = 256,
                  ids: Tensor | None = None) -> Embedding:
    """Encode side ``side`` of every item of ``data`` (or of the items ``ids`` Long[M]) in eval mode; returns an
    Embedding with N (or M) rows on the CPU.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        parts = []
        every = torch.arange(len(data)) if ids is None else ids
        n = every.shape[0]
        for start in range(0, n, batch_size):
            chunk = every[start : min(n, start + batch_size)]
            emb = model.encode(side, to_device(data.side_batch(side, chunk), device))
            parts.append(emb.detach().to("cpu"))
        return Embedding.cat(parts)
    finally:
        model.train(was_training)


def encode_corpus_sharded(model: Any, data: PairedDataset, side: int, device: torch.device,
                          batch_size: int = 256) -> Embedding:
    """:func:`encode_corpus` of all N items, split across the ranks of a torchrun job: rank r encodes items
    ``[r * ceil(N/R), (r+1) * ceil(N/R))`` (the last shard padded with repeats of item N-1) and the shards are
    all-gathered, so every rank ends with the same N rows on the CPU having encoded only 1/R of them. One process:
    plain :func:`encode_corpus`."""
    from negmine import distributed as dist_utils

    info = dist_utils.current()
    if not info.enabled:
        return encode_corpus(model, data, side, device, batch_size)
    n = len(data)
    per = -(-n // info.world_size)
    ids = torch.arange(info.rank * per, (info.rank + 1) * per).clamp_max(n - 1)
    shard = encode_corpus(model, data, side, device, batch_size, ids=ids).to(device)  # gathered on the device
    gathered = dist_utils.gather_embedding(shard)  # pads sequences to the longest across ranks
    return Embedding(gathered.values[:n].cpu(), None if gathered.lengths is None else gathered.lengths[:n].cpu())


@torch.no_grad()
def encode_corpus_streamed(model: Any, data: PairedDataset, side: int, device: torch.device, batch_size: int,
                           normalize: bool, store: DiskEmbeddings | None = None) -> np.ndarray:
    """Encode side ``side`` of all N items batch by batch, keeping only the pooled vectors: returns Float[N, D]
    (C-contiguous float32, L2-normalised when ``normalize``) and writes each batch's full encoding to ``store``.

    Peak memory is a batch of encodings (times the rank count under torchrun), never the N rows that
    :func:`encode_corpus_sharded` gathers. Under torchrun rank r encodes the same shard as there
    (``[r * ceil(N/R), (r+1) * ceil(N/R))``, padded with repeats of item N-1), but each batch is all-gathered as
    soon as it is encoded, so every rank pools (and writes to its own store) all N rows: the ranks' stores are
    identical copies, R x the disk, and no shared file system is assumed. Every rank runs the same number of batches
    (its shard has ceil(N/R) ids), so the collectives line up. The model's train/eval mode is restored afterwards.
    """
    from negmine import distributed as dist_utils

    info = dist_utils.current()
    world, rank = (info.world_size, info.rank) if info.enabled else (1, 0)
    n = len(data)
    per = -(-n // world)
    vectors: np.ndarray | None = None
    was_training = model.training
    model.eval()
    try:
        for start in range(0, per, batch_size):
            stop = min(per, start + batch_size)
            ids = torch.arange(rank * per + start, rank * per + stop)
            emb = model.encode(side, to_device(data.side_batch(side, ids.clamp_max(n - 1)), device)).detach()
            if world > 1:  # every rank's batch, in rank order (sequences padded to the longest across ranks)
                emb = dist_utils.gather_embedding(emb)
                ids = torch.cat([torch.arange(q * per + start, q * per + stop) for q in range(world)])
            real = ids < n  # drop the padding of the last shard
            emb, ids = emb.to("cpu")[real], ids[real]
            if not len(ids):
                continue
            pooled = as_faiss_array(_pooled(emb, normalize))
            if vectors is None:
                vectors = np.empty((n, pooled.shape[1]), dtype=np.float32)
            vectors[ids.numpy()] = pooled
            if store is not None:
                store.write(ids, emb)
    finally:
        model.train(was_training)
    return vectors


def wants_normalized(model: Any, metric: str) -> bool:
    """Whether index vectors and queries are L2-normalised: metric ``cosine``, or ``auto`` with a cosine score."""
    if metric != "auto":
        return metric == "cosine"
    score = getattr(model, "score", None)
    return getattr(score, "name", "") == "cosine" or bool(getattr(score, "normalize", False))


@attrs.define
class SideIndex:
    """One side's searchable corpus.

    index: the FAISS index over Float[N, D] pooled encodings (ids = dataset ids).
    cache: the full encodings of the N items, for re-scoring: an Embedding on the CPU (``cache_store=memory``) or a
        :class:`DiskEmbeddings` read by row from disk (``cache_store=disk``); None with ``rescore=none``.
    """

    index: Any
    cache: Embedding | DiskEmbeddings | None

    def release(self) -> None:
        """Delete the cache's files now (cache_store=disk) instead of whenever the garbage collector gets to them."""
        release(self.cache)


@attrs.define
class Build:
    """The result of one index build: per side the SideIndex and the sampled quality, the nprobe ``index=auto``
    reached per side, and the build's wall time in seconds."""

    indexes: dict[int, SideIndex]
    quality: dict[int, dict[str, float]]
    auto_nprobe: dict[int, int]
    seconds: float = 0.0

    def release(self) -> None:
        for si in self.indexes.values():
            si.release()


@attrs.define
class PendingBuild:
    """A build running in the background (``refresh=async``): from the weights after global step ``built_from``.

    The worker thread fills ``result`` (or ``error``) and ``seconds``; the training thread reads them only after
    joining ``thread``.
    """

    built_from: int
    thread: threading.Thread | None = None
    result: Build | None = None
    error: BaseException | None = None
    seconds: float = 0.0
    launch_seconds: float = 0.0  # the training thread's share: the weight snapshot and starting the thread


class FaissNegatives(NegativeGenerator):
    """Corpus hard negatives from a FAISS index over the training split, refreshed every ``refresh_every`` steps.

    Per active side s and anchor pair i (B pairs in the batch), the query is pair i's other-side encoding, pooled to
    Float[B, D]; the search returns ``candidates`` ids Long[B, C]; these are re-scored with the model's score against
    the corpus encodings cached at the last refresh (``rescore=cached``) or ranked by the index's inner product
    (``rescore=none``). Ids sharing the anchor's id or group are removed, the rest ranked by score, and ``k``
    negatives chosen from ranks ``[rank_min, rank_max)`` (and, with ``min_gap``, scoring at least that much below the
    anchor's positive): the hardest, or a random draw (``strategy=sample``).

    Output per side: ``Negatives.from_dataset(ids Long[B, k], score Float[B, k], valid Bool[B, k])`` on the training
    device, with ``meta["rank"]`` Long[B, k] (rank among the allowed re-scored candidates) and ``meta["index_score"]``
    Float[B, k] (the index's score). Invalid slots (fewer than k allowed candidates) hold id -1.

    Under torchrun each rank encodes 1/R of the training split at each refresh and the shards are all-gathered
    (:func:`encode_corpus_sharded`); every rank then builds the same index (the weights are the same) and mines
    for its local batch. ``cache_dtype=float16`` halves the cached corpus encodings.

    Disk cache (``cache_store=disk``). The corpus is encoded batch by batch
    (:func:`encode_corpus_streamed`): each batch is pooled into the index's vectors and its full encoding appended to
    a :class:`DiskEmbeddings` in a fresh directory under ``cache_dir``, so neither the refresh nor mining holds the
    unpooled corpus in RAM; re-scoring reads the candidates' rows from the file. The negatives (ids and scores) are
    those of the in-memory cache of the same dtype (tested, float32 and float16). A store is private to one build:
    a refresh deletes the old store before encoding (sync) or after the swap (async: the old store serves until
    then, so two exist meanwhile); a failed build deletes its own; a stage end deletes the serving one (the next
    stage start rebuilds, as on resume: a store is never in a checkpoint). Under torchrun every rank writes its own
    full copy (batches are all-gathered as they are encoded).

    Asynchronous refresh (``refresh=async``, one process only). The stage start's build is always synchronous (there
    is nothing to serve yet). At each later refresh point (step s, after its optimiser step) the training thread
    copies the model's state (weights and buffers) into a private copy of the model (made once per stage, eval mode,
    no gradients, on the trainer's device) and a daemon thread builds the next index from it with exactly the code
    of a synchronous build, while the previous index keeps serving. The new index is swapped in at a step end:

    - ``async_lag`` unset: at the first step end after the build finished (polled; not deterministic: it depends on
      the machine's speed), and at the latest at the next refresh point, where the training thread waits for it;
    - ``async_lag=L`` (1 <= L <= refresh_every): exactly at the end of step s + L, waiting for the build if it is
      not done. Training is then deterministic and equals a run whose index is rebuilt synchronously from the
      weights of step s and installed at step s + L (tested against that oracle).

    At most one build is in flight. The index built from step s's weights then equals, bit for bit, what a
    synchronous refresh from those weights gives, provided the worker runs the kernels with the same thread count
    (``async_threads`` equal to the training's; float sums can otherwise differ in the last bits). A build that
    fails raises in the training thread at the swap. ``faiss/staleness`` is the number of optimiser steps between
    the weights that built the index that mined a step's negatives and that step's weights (a synchronous refresh
    every N steps gives 0..N-1; async with lag L gives L..L+N-1).

    Threads: ``torch.set_num_threads`` is process-wide, so the worker does not call it; it sets its own OpenMP
    thread count (``async_threads``, which torch, MKL and faiss use in that thread only): keep training threads +
    async_threads <= cores. On CUDA the worker runs on its own stream.

    Resume: an index, and a build in flight, are never stored in a checkpoint. On resume the stage start rebuilds
    synchronously from the resumed weights (fresher than the one that was in flight, which is dropped) and the
    refresh schedule continues from the checkpoint, as with ``refresh=sync``. A stage end waits for a build in flight
    and discards it. Under torchrun ``refresh=async`` is refused (the sharded encode's all-gather would run on a
    second thread, concurrently with the training's collectives): use ``refresh=sync`` there.
    """

    name = "faiss"
    requires = frozenset({"corpus"})

    @attrs.frozen
    class Options:
        k: int = option(1, "negatives per anchor and side", min=1)
        candidates: int = option(32, "neighbours searched per anchor before exclusion and re-scoring", min=1)
        index: str = option(
            "Flat", "FAISS factory string, e.g. Flat, IVF256,Flat, HNSW32 (inner-product metric), or auto: Flat below "
            "auto_exact_below items, else IVF with ~4 sqrt(N) lists and nprobe raised until recall_target")
        nprobe: int = option(16, "IVF lists visited per query (IVF indexes only; index=auto: the first nprobe tried)",
                             min=1)
        recall_sample: int = option(
            256, "queries sampled at each refresh for exact top-k: faiss/index_recall, faiss/hardest_found (0: off)",
            min=0)
        recall_k: int = option(10, "neighbours compared for faiss/index_recall", min=1)
        recall_warn: float = option(0.8, "warn when the sampled index recall falls below this (0: never)",
                                    min=0.0, max=1.0)
        recall_target: float = option(0.95, "index=auto: raise nprobe until the sampled recall reaches this",
                                      min=0.0, max=1.0)
        auto_exact_below: int = option(50000, "index=auto: an exact Flat index below this many items", min=1)
        cache_dtype: str = option(
            "float32", "dtype of the cached corpus encodings used for re-scoring (float16 halves their memory)",
            choices=("float32", "float16"))
        cache_store: str = option(
            "memory", "where the re-scoring cache lives: memory, or disk (written batch by batch to files under "
            "cache_dir and read by row: for unpooled dense maps too big for RAM; the same negatives)",
            choices=("memory", "disk"))
        cache_dir: str = option(
            None, "cache_store=disk: directory for the cache files, on a disk with room for N x item bytes per side "
            "(not a tmpfs); unset: the system temp dir ($TMPDIR)", type=str)
        refresh_every: int = option(100, "rebuild the index every N steps (0: only at stage start)", min=0)
        rescore: str = option(
            "cached", "cached: re-score candidates with the model's score on cached corpus encodings; none: index score",
            choices=("cached", "none"),
        )
        strategy: str = option("hardest", "hardest: top-k of the window; sample: k drawn from the window",
                               choices=("hardest", "sample"))
        temperature: float = option(
            0.0, "strategy=sample: 0 draws uniformly, > 0 draws with softmax(score / temperature)", min=0.0
        )
        rank_min: int = option(0, "skip the rank_min highest-scoring allowed candidates (likely false negatives)", min=0)
        rank_max: int = option(0, "only allowed candidates ranked below rank_max (0: up to candidates)", min=0)
        min_gap: float = option(
            None, "keep only negatives with score <= positive - min_gap (unset: no filter)", type=float
        )
        metric: str = option("auto", "auto: normalised when the model's score is cosine; ip; cosine",
                             choices=("auto", "ip", "cosine"))
        encode_batch: int = option(256, "batch size for encoding the corpus at each refresh", min=1)
        sides: str = option("both", "which sides get negatives: both, a or b", choices=SIDE_CHOICES)
        refresh: str = option(
            "sync", "sync: rebuild in the training step; async: in a background thread from a weight snapshot, the "
            "stale index serving until the new one is swapped in (one process only)", choices=("sync", "async"))
        async_lag: int = option(
            None, "refresh=async: swap the new index in exactly N steps after the weights it is built from, waiting "
            "for it if needed (deterministic; 1..refresh_every); unset: as soon as it is ready", type=int, min=1)
        async_threads: int = option(
            1, "refresh=async: OpenMP threads of the background build (torch and faiss, in its thread only; 0: as "
            "the process)", min=0)

        def __attrs_post_init__(self) -> None:
            """Cross-option checks; a ValueError here is reported by the config validation, before training."""
            problems = []
            if self.refresh == "async":
                if not self.refresh_every:
                    problems.append("refresh=async needs refresh_every > 0 (with 0 the only build is the stage "
                                    "start's, which is always synchronous)")
                elif self.async_lag is not None and self.async_lag > self.refresh_every:
                    problems.append(f"async_lag ({self.async_lag}) exceeds refresh_every ({self.refresh_every}): at "
                                    "most one build is in flight, so it is swapped in by the next refresh point")
                if _under_torchrun():
                    problems.append("refresh=async is not supported under torchrun (the sharded encode's all-gather "
                                    "would run beside the training's collectives); use refresh=sync")
            elif self.async_lag is not None:
                problems.append(f"async_lag ({self.async_lag}) is set but refresh is {self.refresh!r}; "
                                "it needs refresh=async")
            if self.cache_store == "disk" and self.rescore != "cached":
                problems.append("cache_store=disk stores the re-scoring cache, but rescore is "
                                f"{self.rescore!r} (no cache): use rescore=cached or cache_store=memory")
            if self.cache_dir is not None and self.cache_store != "disk":
                problems.append(f"cache_dir ({self.cache_dir!r}) is set but cache_store is {self.cache_store!r}; "
                                "it needs cache_store=disk")
            if self.rank_max and self.rank_max <= self.rank_min:
                problems.append(f"rank_max ({self.rank_max}) must be greater than rank_min ({self.rank_min}) or 0")
            if self.rank_max > self.candidates:
                problems.append(f"rank_max ({self.rank_max}) exceeds candidates ({self.candidates}); raise candidates")
            if self.rank_min >= self.candidates:
                problems.append(f"rank_min ({self.rank_min}) must be below candidates ({self.candidates})")
            if problems:
                raise ValueError("; ".join(problems))

    def __init__(self, options: Any = None, *, seed: int = 0, task: Any = None) -> None:
        super().__init__(options, seed=seed, task=task)
        self.indexes: dict[int, SideIndex] = {}
        self.groups: Tensor | None = None  # Long[N] group of every training item
        self.last_refresh: int | None = None  # global step of the last scheduled refresh (survives resume)
        self.refreshes = 0  # index builds by this instance (telemetry and tests)
        self.refresh_seconds = 0.0  # duration of the last build
        self.quality: dict[int, dict[str, float]] = {}  # per side, of the last build: see measure_recall
        self._unlogged = False  # a build whose telemetry has not been logged yet
        self._auto_nprobe: dict[int, int] = {}  # index=auto: the nprobe the last build reached, per side
        self._hooked = False  # lifecycle hooks are being delivered
        # refresh=async
        self.built_from: int | None = None  # global step of the weights the serving index was built from
        self.staleness: int | None = None  # steps between those weights and the last mined batch's
        self.refresh_wait_seconds = 0.0  # the training thread's time for the last swapped build (snapshot + wait)
        self.pending: PendingBuild | None = None  # the build in flight
        self._shadow: Any = None  # the private model copy the worker encodes with

    @classmethod
    def check_requirements(cls, task: Any) -> None:
        super().check_requirements(task)
        import_faiss()

    # -- lifecycle hooks ------------------------------------------------------------------------------------------------

    @hookimpl
    def negmine_stage_start(self, trainer: Any) -> None:
        """Build the index (fresh stage, or a resumed one: the schedule position comes from the checkpoint)."""
        self._hooked = True
        if self.last_refresh is None:
            self.last_refresh = trainer.global_step
        self.refresh(trainer.model, trainer.task.train, trainer.device, self._sides_of(trainer.model))
        self.built_from = trainer.global_step
        self._warn_if_poor(trainer.reporter.warn)

    @hookimpl
    def negmine_step_end(self, trainer: Any, step: int, metrics: dict) -> None:
        """Rebuild every ``refresh_every`` steps; log the last build's time and sampled recall on the first log line
        from the step it was built on (the stage start's build included). With ``refresh=async``: swap a finished
        background build in, start the next one at a refresh point, and log ``faiss/staleness`` on every log line."""
        stage_done = trainer.step_in_stage >= trainer.stage.steps  # no step left to use a new index
        if self.options.refresh == "async":
            if self.advance_async(step, trainer.model, trainer.task.train, trainer.device,
                                  self._sides_of(trainer.model), launch=not stage_done):
                self._warn_if_poor(trainer.reporter.warn)
        elif self._due(step) and not stage_done:
            self.last_refresh = step
            self.refresh(trainer.model, trainer.task.train, trainer.device, self._sides_of(trainer.model))
            self._warn_if_poor(trainer.reporter.warn)
        log_line = step % trainer.config.log_every == 0 or stage_done  # the trainer writes this step's metrics
        if self._unlogged and log_line:  # the last build's telemetry, on the first log line from its step on
            metrics.update(self.telemetry())
            self._unlogged = False
        if log_line and self.options.refresh == "async" and self.staleness is not None:
            metrics[f"{self.name}/staleness"] = self.staleness

    @hookimpl
    def negmine_stage_end(self, trainer: Any, stage: Any, metrics: dict) -> None:
        """Wait for a background build still in flight and discard it (no step is left to use it); with
        ``cache_store=disk`` also delete the serving index's files (the next stage start rebuilds)."""
        self.close()
        if self.options.cache_store == "disk":
            self._drop_indexes()

    def close(self) -> None:
        """Wait for the background build in flight, if any, and drop it (its error, if it failed, too, and its
        cache files)."""
        pending, self.pending = self.pending, None
        if pending is not None and pending.thread is not None:
            pending.thread.join()
            if pending.result is not None:
                pending.result.release()

    def _drop_indexes(self) -> None:
        """Forget the serving indexes, deleting their cache files now (cache_store=disk)."""
        indexes, self.indexes = self.indexes, {}
        for si in indexes.values():
            si.release()

    def telemetry(self) -> dict[str, float]:
        """The last build's keys: ``faiss/refresh_s``, ``faiss/refreshes`` and, with ``recall_sample``, the sampled
        ``faiss/index_recall`` and ``faiss/hardest_found`` (means over the indexed sides; per side as
        ``faiss/sideS/...``) and ``faiss/nprobe`` (the IVF probes in use, index=auto included). With
        ``refresh=async`` also ``faiss/refresh_wait_s``: the training thread's time for that build (the weight
        snapshot and any wait at the swap); ``faiss/refresh_s`` is then the background build's own wall time."""
        out = {f"{self.name}/refresh_s": self.refresh_seconds, f"{self.name}/refreshes": self.refreshes}
        if self.options.refresh == "async":
            out[f"{self.name}/refresh_wait_s"] = self.refresh_wait_seconds
        for key in ("index_recall", "hardest_found", "nprobe"):
            values = [q[key] for q in self.quality.values() if key in q]
            if values:
                out[f"{self.name}/{key}"] = float(np.mean(values))
            for side, q in self.quality.items():
                if key in q:
                    out[f"{self.name}/side{side}/{key}"] = q[key]
        return out

    def _warn_if_poor(self, warn: Any) -> None:
        o = self.options
        for side, q in sorted(self.quality.items()):
            if "index_recall" in q and q["index_recall"] < o.recall_warn:
                warn(f"faiss: the {o.index!r} index (side {side}) finds only {100 * q['index_recall']:.0f}% of the "
                     f"exact {o.recall_k} nearest items of {q['sampled']} sampled queries, and the exact hardest for "
                     f"{100 * q['hardest_found']:.0f}% (below recall_warn {o.recall_warn}): its negatives are far "
                     "from the hardest. Raise nprobe, use more IVF lists, index=auto (nprobe raised until "
                     "recall_target) or Flat.")

    def _due(self, step: int) -> bool:
        every = self.options.refresh_every
        return bool(every) and self.last_refresh is not None and step - self.last_refresh >= every

    def _sides_of(self, model: Any) -> list[int]:
        from negmine.generator import resolve_sides

        return resolve_sides(self.options.sides, getattr(model, "sides", ("a", "b")))

    # -- the index ------------------------------------------------------------------------------------------------------

    def refresh(self, model: Any, data: PairedDataset, device: torch.device, sides: list[int]) -> None:
        """Encode the corpus with the current model and rebuild one index per side in ``sides``."""
        tick = time.perf_counter()
        if self.groups is None or len(self.groups) != len(data):
            self.groups = corpus_groups(data)
        self._drop_indexes()  # drop the old index and cache first: peak memory (or disk) is one copy, not two
        self.quality = {}
        build = self.build(model, data, device, sides, self._recall_sample(len(data)))
        self.indexes, self.quality = build.indexes, build.quality
        self._auto_nprobe.update(build.auto_nprobe)
        self.refreshes += 1
        self.refresh_seconds = time.perf_counter() - tick
        self._unlogged = True

    def build(self, model: Any, data: PairedDataset, device: torch.device, sides: list[int],
              sample: Tensor | None) -> Build:
        """One index (and cache, and sampled quality) per side in ``sides`` from ``model``'s encodings of ``data``.

        Reads ``self.groups`` and the nprobe ``index=auto`` reached last, changes nothing on ``self``: the
        synchronous refresh and the background worker run this same code. ``sample``: the recall-check ids.
        """
        tick = time.perf_counter()
        o = self.options
        normalize = wants_normalized(model, o.metric)
        indexes: dict[int, SideIndex] = {}
        quality: dict[int, dict[str, float]] = {}
        auto_nprobe: dict[int, int] = {}
        try:
            for side in sides:
                if o.cache_store == "disk":  # streamed: the unpooled encodings go to disk batch by batch
                    store = DiskEmbeddings(len(data), getattr(torch, o.cache_dtype), o.cache_dir)
                    indexes[side] = SideIndex(None, store)  # registered first: released if anything below fails
                    vectors = encode_corpus_streamed(model, data, side, device, o.encode_batch, normalize, store)
                    cache = store.finish()
                    emb = None
                else:
                    emb = encode_corpus_sharded(model, data, side, device, o.encode_batch)
                    vectors = as_faiss_array(_pooled(emb, normalize))
                    cache = None
                    if o.rescore == "cached":
                        cache = emb if o.cache_dtype == "float32" else Embedding(emb.values.half(), emb.lengths)
                auto = o.index == "auto"
                index = build_index(vectors, auto_spec(len(data), o.auto_exact_below) if auto else o.index,
                                    self._auto_nprobe.get(side, o.nprobe) if auto else o.nprobe)
                if sample is not None:
                    queries = _pooled(encode_corpus(model, data, 1 - side, device, o.encode_batch, ids=sample),
                                      normalize)
                    quality[side] = tune_and_measure(index, vectors, as_faiss_array(queries), sample.numpy(),
                                                     self.groups.numpy(), o.recall_k,
                                                     o.recall_target if auto else None)
                    if auto and "nprobe" in quality[side]:  # the next build starts where this one ended
                        auto_nprobe[side] = int(quality[side]["nprobe"])
                indexes[side] = SideIndex(index, cache)
                del emb
        except BaseException:
            for si in indexes.values():  # a failed build leaves no files behind
                si.release()
            raise
        return Build(indexes, quality, auto_nprobe, time.perf_counter() - tick)

    # -- asynchronous refresh ---------------------------------------------------------------------------------------------

    def advance_async(self, step: int, model: Any, data: PairedDataset, device: torch.device, sides: list[int],
                      launch: bool = True) -> bool:
        """The ``refresh=async`` schedule at the end of global step ``step``: swap the build in flight in when it is
        due (``async_lag`` steps after its weights, waiting for it) or, without a lag, when it has finished (waiting
        for it at a refresh point); then, at a refresh point and with ``launch``, start the next build from the
        model's current weights. Returns whether an index was swapped in."""
        swapped = False
        pending = self.pending
        if pending is not None:
            lag = self.options.async_lag
            due = self._due(step)
            if lag is not None:
                swapped = self._swap(wait=True) if step - pending.built_from >= lag or due else False
            else:
                swapped = self._swap(wait=due)
        if launch and self._due(step):
            self.last_refresh = step
            self._launch(step, model, data, device, sides)
        return swapped

    def _launch(self, step: int, model: Any, data: PairedDataset, device: torch.device, sides: list[int]) -> None:
        """Snapshot the model's state into the private copy and start the worker thread on it."""
        tick = time.perf_counter()
        if self.groups is None or len(self.groups) != len(data):
            self.groups = corpus_groups(data)
        shadow = self._snapshot(model)
        pending = PendingBuild(built_from=step)
        stream = None
        if torch.device(device).type == "cuda":  # the worker's kernels on their own stream, after the copy
            stream = torch.cuda.Stream(device=device)
            stream.wait_stream(torch.cuda.current_stream(device))
        pending.thread = threading.Thread(
            target=self._work, args=(pending, shadow, data, device, sides, self._recall_sample(len(data)), stream),
            name=f"negmine-faiss-build-{step}", daemon=True)
        self.pending = pending
        pending.launch_seconds = time.perf_counter() - tick
        pending.thread.start()

    def _snapshot(self, model: Any) -> Any:
        """The private copy of ``model`` (made on first use: eval mode, no gradients) holding ``model``'s current
        weights and buffers."""
        if self._shadow is None:
            shadow = copy.deepcopy(model)
            for p in shadow.parameters():
                p.grad = None
                p.requires_grad_(False)
            self._shadow = shadow
        with torch.no_grad():
            self._shadow.load_state_dict(model.state_dict())
        self._shadow.eval()
        return self._shadow

    def _work(self, pending: PendingBuild, shadow: Any, data: PairedDataset, device: torch.device,
              sides: list[int], sample: Tensor | None, stream: Any) -> None:
        """The worker thread's body: one :meth:`build`, its result or error left in ``pending``."""
        tick = time.perf_counter()
        try:
            threads = self.options.async_threads
            if threads:
                torch.get_num_threads()  # torch sets this thread's OpenMP count on first use (this call); then
                import_faiss().omp_set_num_threads(threads)  # cap it: omp_set_num_threads acts on this thread only
            with torch.no_grad(), (torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()):
                pending.result = self.build(shadow, data, device, sides, sample)
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread, which raises it
            pending.error = exc
        pending.seconds = time.perf_counter() - tick

    def _swap(self, wait: bool) -> bool:
        """Install the build in flight if it has finished (or, with ``wait``, once it has). Returns whether it was."""
        pending = self.pending
        if pending is None or (not wait and pending.thread.is_alive()):
            return False
        tick = time.perf_counter()
        pending.thread.join()
        waited = time.perf_counter() - tick
        self.pending = None
        if pending.error is not None:
            if isinstance(pending.error, NegmineError):
                raise pending.error
            exc = pending.error
            raise PluginError(f"faiss: the background index build from the weights of step {pending.built_from} "
                              f"failed: {type(exc).__name__}: {exc}") from exc
        build = pending.result
        old, self.indexes, self.quality = self.indexes, build.indexes, build.quality
        for si in old.values():  # the stale index served until now; its cache files can go
            si.release()
        self._auto_nprobe.update(build.auto_nprobe)
        self.refreshes += 1
        self.refresh_seconds = pending.seconds
        self.refresh_wait_seconds = pending.launch_seconds + waited
        self.built_from = pending.built_from
        self._unlogged = True
        return True

    def _recall_sample(self, n: int) -> Tensor | None:
        """Long[S] corpus ids whose other side queries the index for the recall check (seeded per refresh)."""
        if not self.options.recall_sample:
            return None
        gen = torch.Generator().manual_seed(self.seed * 1000003 + self.refreshes)
        return torch.randperm(n, generator=gen)[: min(self.options.recall_sample, n)].sort().values

    def search(self, side: int, queries: Tensor, depth: int) -> tuple[Tensor, Tensor]:
        """Search side ``side``'s index. queries: Float[B, D] (normalised by the caller if needed).

        Returns (ids Long[B, C], scores Float[B, C]) on the CPU, C = min(depth, corpus size); missing hits are -1.
        """
        index = self.indexes[side].index
        depth = min(depth, index.ntotal)
        scores, ids = index.search(as_faiss_array(queries), depth)
        return torch.from_numpy(ids).long(), torch.from_numpy(scores)

    # -- mining ---------------------------------------------------------------------------------------------------------

    def mine(self, ctx: MiningContext) -> dict[int, Negatives]:
        sides = self.active_sides(ctx)
        if not self._hooked:  # used without lifecycle hooks: keep the same schedule lazily
            data = ctx.task.train
            if self.options.refresh == "async" and self.last_refresh is not None and all(
                    s in self.indexes for s in sides):
                self.advance_async(ctx.step, ctx.model, data, ctx.device, sides)
            elif self.last_refresh is None or self._due(ctx.step) or any(s not in self.indexes for s in sides):
                self.close()
                self.last_refresh = self.built_from = ctx.step
                self.refresh(ctx.model, data, ctx.device, sides)
        if self.built_from is not None:
            self.staleness = ctx.step - self.built_from
        missing = [s for s in sides if s not in self.indexes]
        if missing:
            raise PluginError(f"faiss: no index for side(s) {missing}; negmine_stage_start did not build them")
        normalize = wants_normalized(ctx.model, self.options.metric)
        out = {}
        for side in sides:
            query_emb = ctx.embeddings[1 - side]
            ids, index_scores = self.search(side, _pooled(query_emb, normalize), self.options.candidates)
            out[side] = self._choose(ctx, side, query_emb, ids, index_scores)
        return out

    def _choose(self, ctx: MiningContext, side: int, query_emb: Embedding, ids: Tensor, index_scores: Tensor) -> Negatives:
        """From ids Long[B, C] (and their index scores Float[B, C]) to the side's Negatives."""
        o = self.options
        device = ctx.device
        safe = ids.clamp_min(0)  # faiss pads missing hits with -1
        cand_groups = self.groups[safe]  # on the CPU, where the corpus groups live
        ids, safe, index_scores, cand_groups = (t.to(device) for t in (ids, safe, index_scores, cand_groups))
        anchor_ids = ctx.batch.ids.to(device)[:, None]
        anchor_groups = ctx.batch.group_ids.to(device)[:, None]
        allowed = (ids >= 0) & (ids != anchor_ids) & (cand_groups != anchor_groups)
        allowed &= ~_false_negatives(ctx, safe)
        if o.rescore == "cached":
            scores = self._rescore(ctx, side, query_emb, safe)
        else:
            scores = index_scores
        masked = scores.masked_fill(~allowed, NEG_INF)
        order = masked.argsort(dim=1, descending=True, stable=True)  # [B, C]; allowed first, by score
        sorted_scores = masked.gather(1, order)
        c = order.shape[1]
        rank = torch.arange(c, device=device).expand_as(order)
        window = sorted_scores > NEG_INF
        window &= rank >= o.rank_min
        if o.rank_max:
            window &= rank < o.rank_max
        if o.min_gap is not None:  # after ranking, as in hard-minibatch: the window counts every allowed candidate
            window &= sorted_scores <= ctx.positive_scores.to(device)[:, None] - o.min_gap
        k = min(o.k, c)
        if o.strategy == "sample":
            if o.temperature > 0:
                logits = sorted_scores / o.temperature
                gumbel = -torch.log(-torch.log(torch.rand(order.shape, generator=self.rng).clamp(1e-12, 1)))
                keys = logits + gumbel.to(device)
            else:
                keys = torch.rand(order.shape, generator=self.rng).to(device)
        else:
            keys = -rank.to(scores.dtype)  # hardest first
        keys = keys.masked_fill(~window, NEG_INF)
        top = keys.topk(k, dim=1)
        pick = top.indices  # positions in the sorted order (= rank among the allowed candidates), [B, k]
        valid = top.values > NEG_INF
        if o.strategy == "sample":  # list a draw hardest first, like the hardest strategy; invalid slots last
            pick = torch.where(valid, pick, torch.full_like(pick, c)).sort(dim=1).values
            valid = pick < c
            pick = pick.clamp_max(c - 1)
        cand = order.gather(1, pick)  # positions among the C candidates
        chosen_ids = ids.gather(1, cand).masked_fill(~valid, -1)
        chosen_scores = scores.gather(1, cand).masked_fill(~valid, NEG_INF)
        return Negatives.from_dataset(
            chosen_ids, chosen_scores, valid, rank=pick.masked_fill(~valid, -1),
            index_score=index_scores.gather(1, cand),
        )

    def _rescore(self, ctx: MiningContext, side: int, query_emb: Embedding, ids: Tensor) -> Tensor:
        """Float[B, C]: the model's score of pair i with its side-s member replaced by cached corpus item ids[i, c].

        The cache (in memory or on disk) is read 4096 candidate rows at a time."""
        cache = self.indexes[side].cache
        b, c = ids.shape
        flat = ids.flatten().cpu()
        rows = torch.arange(b, device=query_emb.values.device).repeat_interleave(c)
        out = []
        chunk = 4096
        for start in range(0, flat.numel(), chunk):
            cand = cache[flat[start : start + chunk]].to(ctx.device)
            if cand.values.dtype != query_emb.values.dtype:  # a float16 cache is scored in the model's dtype
                cand = Embedding(cand.values.to(query_emb.values.dtype), cand.lengths)
            anchor = query_emb[rows[start : start + chunk]]
            pair = (cand, anchor) if side == 0 else (anchor, cand)
            out.append(ctx.model.score_pairs(*pair).float())
        return torch.cat(out).view(b, c)

    # -- state ----------------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The RNG and the refresh schedule; the index itself is rebuilt from the model on resume."""
        return {"rng": self.rng.get_state(), "last_refresh": -1 if self.last_refresh is None else self.last_refresh}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        last = int(state.get("last_refresh", -1))
        self.last_refresh = None if last < 0 else last


def _under_torchrun() -> bool:
    """Whether this process is one of several ranks (torchrun's WORLD_SIZE, or an initialised process group)."""
    from negmine import distributed as dist_utils

    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 or dist_utils.current().enabled


def _pooled(emb: Embedding, normalize: bool) -> Tensor:
    """Float[N, D] pooled encodings, L2-normalised when ``normalize``."""
    x = emb.pooled().float()
    return torch.nn.functional.normalize(x, dim=1) if normalize else x
