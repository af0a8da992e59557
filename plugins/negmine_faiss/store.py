"""A disk-backed store of corpus encodings for re-scoring (``cache_store=disk``).

The re-scoring cache holds every corpus item's *unpooled* encoding: for dense maps (DaveNet's 128 x T audio frames)
that is 1M x 128 x 64 x 2 bytes = 16 GB per side in float16, which does not fit in RAM beside the model, the index
and the data. :class:`DiskEmbeddings` is written batch by batch while the corpus is encoded (so a refresh never
holds the whole encoding) and read back a few thousand rows at a time by positioned reads (``os.preadv``, one per
row), so the process holds only the rows being re-scored.

Why not ``numpy.memmap`` for the reads: a mapped file's pages count in the process's resident set once touched, and
the kernel maps more than the faulting page (fault-around, whole large folios of the page cache): reading 4096
random 16 KB rows of a 1.6 GB file through a fresh mapping raised the peak RSS by 1.6 GB on the development machine
(Linux, 8 MB read-ahead), against 64 MB (the rows themselves) with ``preadv``, at the same speed (about 40 ms).
The page cache still keeps recently read rows, but the kernel can reclaim it at will.

It reads back exactly what the in-memory cache holds: ``store[ids]`` equals ``Embedding.cat(batches)[ids]``, values
(cast to the store's dtype) and lengths, sequences right-padded with zeros to the longest of the whole corpus.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from typing import Any

import numpy as np
import torch
from torch import Tensor

from negmine.errors import PluginError
from negmine.model import Embedding

NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16}


class DiskEmbeddings:
    """The encodings of N corpus items in files under a private directory, readable by row like an Embedding.

    Layout: one raw C-order file per distinct per-item shape among the written batches (``part{k}.bin``, rows of
    shape ``shapes[k]``, in the order written). A fixed-size encoder (image maps, sequences padded to a fixed length)
    gives a single file; an encoder whose sequence length varies by batch gives one file per length, and reads pad
    every row to the longest, as :meth:`Embedding.cat` does in memory. ``part[i]`` and ``row[i]`` say where item i
    lives, so batches may be written in any order (the sharded encode interleaves the ranks' batches). Lengths
    (Long[N], 8 bytes an item) stay in memory.

    Life cycle: :meth:`write` every batch, :meth:`finish` (which checks that every item was written and opens the
    files for reading), then read (from any thread: positioned reads share no file offset); :meth:`close` deletes
    the directory. The directory is also deleted when the store is garbage-collected or the interpreter exits
    (``weakref.finalize``), and by the generator when a build fails; only a killed process leaves a
    ``negmine-faiss-*`` directory behind.
    """

    def __init__(self, n: int, dtype: torch.dtype, directory: str | os.PathLike | None = None) -> None:
        if dtype not in NUMPY_DTYPES:
            raise PluginError(f"faiss: cache_store=disk stores float32 or float16, not {dtype}")
        self.n, self.dtype = n, dtype
        if directory is not None:
            os.makedirs(directory, exist_ok=True)
        self.directory = tempfile.mkdtemp(prefix="negmine-faiss-", dir=directory)
        self.part = np.full(n, -1, dtype=np.int32)  # the file holding item i (-1: not written yet)
        self.row = np.zeros(n, dtype=np.int64)  # item i's row in that file
        self.lengths: Tensor | None = None  # Long[N], for sequences with valid lengths
        self.shapes: list[tuple[int, ...]] = []  # per file: the shape of one item's encoding
        self.item_shape: tuple[int, ...] | None = None  # after finish: the (padded) shape every read returns
        self._rows: list[int] = []  # per file: rows written
        self._files: list[Any] = []  # open file objects: writers, then (after finish) readers
        self._finished = False
        # Without a reference to self, so that it can run when self is collected: closes the files, then deletes.
        self._cleanup = weakref.finalize(self, _remove, self.directory, self._files)

    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        """Bytes on disk (values only)."""
        size = np.dtype(NUMPY_DTYPES[self.dtype]).itemsize
        return sum(rows * int(np.prod(shape)) * size for rows, shape in zip(self._rows, self.shapes, strict=True))

    def write(self, ids: Tensor, emb: Embedding) -> None:
        """Append the encodings ``emb`` (M rows, on any device) of the items ``ids`` Long[M]."""
        if self._finished:
            raise PluginError("faiss: internal error: writing to a finished corpus store")
        values = emb.values.detach().to("cpu", self.dtype).contiguous()
        ids_np = ids.cpu().numpy().astype(np.int64)
        shape = tuple(values.shape[1:])
        if shape not in self.shapes:
            self.shapes.append(shape)
            self._rows.append(0)
            self._files.append(open(self._path(len(self.shapes) - 1), "wb"))  # noqa: SIM115 - closed in finish
        k = self.shapes.index(shape)
        values.numpy().tofile(self._files[k])
        self.part[ids_np] = k
        self.row[ids_np] = self._rows[k] + np.arange(len(ids_np))
        self._rows[k] += len(ids_np)
        if emb.lengths is not None:
            if self.lengths is None:
                self.lengths = torch.zeros(self.n, dtype=torch.long)
            self.lengths[torch.from_numpy(ids_np)] = emb.lengths.detach().to("cpu", torch.long)

    def finish(self) -> DiskEmbeddings:
        """Close the files for writing and open them for reading; every item must have been written. Returns self."""
        for f in self._files:
            f.close()
        self._files.clear()
        missing = int((self.part < 0).sum())
        if missing:
            raise PluginError(f"faiss: internal error: {missing} of {self.n} corpus items missing from the store")
        first = self.shapes[0]
        if any(len(s) != len(first) or s[:-1] != first[:-1] or (len(s) < 2 and s != first) for s in self.shapes):
            raise PluginError(f"faiss: the corpus encodings' shapes differ other than along the last axis "
                              f"({sorted(set(self.shapes))}); only sequence lengths may vary between batches")
        # Embedding.cat pads only dense maps (an item shape of 2+ axes), along their last axis.
        self.item_shape = first if len(first) < 2 else (*first[:-1], max(s[-1] for s in self.shapes))
        self._files.extend(open(self._path(k), "rb", buffering=0) for k in range(len(self.shapes)))  # noqa: SIM115
        self._finished = True
        return self

    def __getitem__(self, ids: Tensor) -> Embedding:
        """The Embedding of the items ``ids`` Long[M]: values [M, *item_shape] in the store's dtype, on the CPU."""
        if not self._finished:
            raise PluginError("faiss: internal error: reading a corpus store that is not finished (or is closed)")
        ids_np = ids.cpu().numpy().astype(np.int64).reshape(-1)
        parts = self.part[ids_np]
        rows = self.row[ids_np]
        lengths = None if self.lengths is None else self.lengths[torch.from_numpy(ids_np)]
        if len(self.shapes) == 1 and self.shapes[0] == self.item_shape:  # the usual case: one file, no padding
            return Embedding(self._read(0, rows), lengths)
        values = torch.zeros((len(ids_np), *self.item_shape), dtype=self.dtype)
        for k in np.unique(parts):
            sel = np.flatnonzero(parts == k)
            block = self._read(int(k), rows[sel])
            values[torch.from_numpy(sel), ..., : block.shape[-1]] = block  # zeros beyond the batch's length
        return Embedding(values, lengths)

    def close(self) -> None:
        """Close and delete the files (idempotent)."""
        self._finished = False
        self._cleanup()

    def _path(self, k: int) -> str:
        return os.path.join(self.directory, f"part{k}.bin")

    def _read(self, k: int, rows: np.ndarray) -> Tensor:
        """Rows ``rows`` Long[M] of file k as a tensor [M, *shapes[k]], one positioned read per row."""
        block = np.empty((len(rows), *self.shapes[k]), dtype=NUMPY_DTYPES[self.dtype])
        size = block[0].nbytes if len(rows) else 0
        buffer = memoryview(block.reshape(-1).view(np.uint8))
        fd = self._files[k].fileno()
        for j, row in enumerate(rows.tolist()):
            if _pread(fd, buffer[j * size : (j + 1) * size], row * size) != size:
                raise PluginError(f"faiss: the corpus store file {self._path(k)} is shorter than written "
                                  "(deleted or truncated while in use?)")
        return torch.from_numpy(block)


def _pread(fd: int, target: memoryview, offset: int) -> int:
    """Read len(target) bytes at ``offset`` into ``target``; returns the bytes read (short only at the file's end)."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [target], offset)
    data = os.pread(fd, len(target), offset)  # pragma: no cover - platforms without preadv
    target[: len(data)] = data  # pragma: no cover
    return len(data)  # pragma: no cover


def _remove(directory: str, files: list[Any]) -> None:
    for f in files:
        f.close()
    files.clear()
    shutil.rmtree(directory, ignore_errors=True)


def release(cache: Any) -> None:
    """Delete a cache's files if it is a :class:`DiskEmbeddings` (an in-memory Embedding is left to the GC)."""
    if isinstance(cache, DiskEmbeddings):
        cache.close()
