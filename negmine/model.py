"""The dual-encoder protocol and the data records the trainer and generators share.

Sides. A dual encoder has two towers, called *sides*, named by the model (e.g. ``("image", "audio")``). The first side
is ``a`` and the second ``b`` in shapes below. A pair ``i`` is ``(a_i, b_i)``; a negative "on side s" for pair ``i``
replaces the side-``s`` member of the pair: an image negative is an impostor image for audio ``i``, an audio negative is
an impostor audio for image ``i``.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor, nn


class Capability(str, enum.Enum):
    """What a generator may need from a task. Tasks list what they provide; the vocabulary is open (plain strings work)."""

    DENSE_MAPS = "dense_maps"  # encodings keep spatial/temporal maps (Embedding.values with >2 dims)
    LATENTS = "latents"  # each batch carries the GAN latent that generated its image: batch.extras["latent"]
    GAN = "gan"  # task.resources["gan"] is a generator network that maps latents to model inputs
    CORPUS = "corpus"  # the training set supports random access by id (dataset-id negatives, index mining)
    SCENES = "scenes"  # items carry a symbolic scene description (oracle edits)


@attrs.frozen
class Embedding:
    """One side's encodings for a batch.

    values: Float[N, D] for vector encoders, or a dense map Float[N, D, *spatial] (e.g. [N, D, H, W] for images,
        [N, D, T] for audio).
    lengths: Long[N] valid length along the last axis for variable-length sequences (audio frames after pooling), or None.
    """

    values: Tensor
    lengths: Tensor | None = None

    def __len__(self) -> int:
        return self.values.shape[0]

    def __getitem__(self, index: Tensor | slice) -> Embedding:
        lengths = None if self.lengths is None else self.lengths[index]
        return Embedding(self.values[index], lengths)

    def detach(self) -> Embedding:
        return Embedding(self.values.detach(), None if self.lengths is None else self.lengths.detach())

    def to(self, device: torch.device | str) -> Embedding:
        lengths = None if self.lengths is None else self.lengths.to(device)
        return Embedding(self.values.to(device), lengths)

    @staticmethod
    def cat(parts: Sequence[Embedding]) -> Embedding:
        """Concatenate along the batch axis; dense maps with different lengths are right-padded with zeros."""
        values = [p.values for p in parts]
        if values[0].dim() > 2 and any(v.shape[2:] != values[0].shape[2:] for v in values):
            longest = max(v.shape[-1] for v in values)
            values = [nn.functional.pad(v, (0, longest - v.shape[-1])) for v in values]
        lengths = None if parts[0].lengths is None else torch.cat([p.lengths for p in parts])
        return Embedding(torch.cat(values), lengths)

    def pooled(self) -> Tensor:
        """Float[N, D]: the mean over every axis after D (masked by ``lengths``); vectors are returned unchanged."""
        v = self.values
        if v.dim() == 2:
            return v
        if self.lengths is None:
            return v.flatten(2).mean(-1)
        t = v.shape[-1]
        mask = (torch.arange(t, device=v.device)[None, :] < self.lengths[:, None]).to(v.dtype)  # [N, T]
        mask = mask.view(v.shape[0], *([1] * (v.dim() - 2)), t)
        other = v[0, 0].numel() // t  # size of any axes between D and the length axis
        denom = self.lengths.clamp(1, t).to(v.dtype) * other  # [N]
        return (v * mask).flatten(2).sum(-1) / denom[:, None]


def span_view(emb: Embedding, span: Tensor) -> Embedding:
    """The frames of each sequence inside a span, as sequences of their own.

    emb: sequences ``values`` Float[N, D, T] with valid ``lengths`` Long[N] (None: all T frames valid).
    span: Float[N, 2], (start, end) as fractions of each sequence's valid length, 0 <= start < end <= 1; fractions
        let a generator name a word's place in the input (its frames over the input's) without knowing how far the
        model's tower pools time.
    Returns Float[N, D, L] (L: the longest span) whose ``lengths`` are the span lengths in frames: frames
    floor(start * length) to ceil(end * length), at least one frame."""
    values = emb.values
    n, _, t = values.shape
    length = torch.full((n,), t, device=values.device) if emb.lengths is None else emb.lengths.clamp(1, t)
    span = span.to(values.device, torch.float32)
    start = (span[:, 0].clamp(0, 1) * length).floor().long().clamp(max=length - 1)
    end = torch.maximum((span[:, 1].clamp(0, 1) * length).ceil().long().clamp(max=length), start + 1)
    width = end - start
    longest = int(width.max()) if n else 1
    frames = (start[:, None] + torch.arange(longest, device=values.device)[None, :]).clamp(max=t - 1)  # [N, L]
    gathered = values.gather(2, frames[:, None, :].expand(n, values.shape[1], longest))
    return Embedding(gathered, width)


@attrs.frozen
class Batch:
    """A batch of B positive pairs as the loader yields it.

    a, b: the two sides' model inputs (a tensor [B, ...], or any structure of tensors the model's ``encode`` accepts,
        e.g. ``(features[B, 1, 40, T], nframes[B])`` for audio).
    ids: Long[B] dataset ids (row numbers of the split). Negatives never share the anchor's id.
    groups: Long[B] items with the same group are never negatives of each other (e.g. several captions of one image);
        defaults to ``ids``.
    extras: anything else the task attaches (``"latent"``: Float[B, Z] for GAN images).
    """

    a: Any
    b: Any
    ids: Tensor
    groups: Tensor | None = None
    extras: Mapping[str, Any] = attrs.field(factory=dict)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def side(self, index: int) -> Any:
        return self.a if index == 0 else self.b

    @property
    def group_ids(self) -> Tensor:
        return self.ids if self.groups is None else self.groups

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            to_device(self.a, device),
            to_device(self.b, device),
            self.ids.to(device),
            None if self.groups is None else self.groups.to(device),
            {k: to_device(v, device) for k, v in self.extras.items()},
        )


def to_device(obj: Any, device: torch.device | str) -> Any:
    """Move every tensor inside tuples, lists and dicts to ``device`` (non-blocking)."""
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, tuple):
        return tuple(to_device(o, device) for o in obj)
    if isinstance(obj, list):
        return [to_device(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def index_inputs(obj: Any, index: Tensor) -> Any:
    """Select rows ``index`` from every tensor in a model-input structure."""
    if isinstance(obj, Tensor):
        return obj[index.to(obj.device)]
    if isinstance(obj, tuple):
        return tuple(index_inputs(o, index) for o in obj)
    if isinstance(obj, list):
        return [index_inputs(o, index) for o in obj]
    if isinstance(obj, dict):
        return {k: index_inputs(v, index) for k, v in obj.items()}
    return obj


def concat_inputs(parts: Sequence[Any]) -> Any | None:
    """Concatenate model-input structures of the same form along the first axis (tensors, and tuples, lists and
    dicts of them); None when their forms, dtypes or trailing shapes differ."""
    first = parts[0]
    if isinstance(first, Tensor):
        if not all(isinstance(p, Tensor) and p.dtype == first.dtype and p.shape[1:] == first.shape[1:]
                   and p.device == first.device for p in parts):
            return None
        return torch.cat(list(parts))
    if isinstance(first, (tuple, list)):
        if not all(type(p) is type(first) and len(p) == len(first) for p in parts):
            return None
        joined = [concat_inputs([p[i] for p in parts]) for i in range(len(first))]
        return None if any(j is None for j in joined) else type(first)(joined)
    if isinstance(first, dict):
        if not all(isinstance(p, dict) and p.keys() == first.keys() for p in parts):
            return None
        joined = {k: concat_inputs([p[k] for p in parts]) for k in first}
        return None if any(v is None for v in joined.values()) else joined
    return None


def flatten_inputs(obj: Any, leading: int = 2) -> Any:
    """Merge the first ``leading`` axes of every tensor: [B, K, ...] -> [B*K, ...]."""
    if isinstance(obj, Tensor):
        return obj.flatten(0, leading - 1)
    if isinstance(obj, tuple):
        return tuple(flatten_inputs(o, leading) for o in obj)
    if isinstance(obj, list):
        return [flatten_inputs(o, leading) for o in obj]
    if isinstance(obj, dict):
        return {k: flatten_inputs(v, leading) for k, v in obj.items()}
    return obj


class PairedDataset:
    """Random-access paired data. Subclass and implement ``__len__`` and ``batch``.

    Ids are row numbers ``0 .. len-1`` of this split.
    """

    def __len__(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def batch(self, ids: Tensor) -> Batch:
        """Load and collate the pairs with these ids. ids: Long[B] -> Batch of B pairs."""
        raise NotImplementedError  # pragma: no cover - interface

    def side_batch(self, side: int, ids: Tensor) -> Any:
        """Model inputs of one side only (used for dataset-id negatives). Override when one side is cheaper to load."""
        return self.batch(ids).side(side)

    def false_negatives(self, ids: Tensor, candidate_ids: Tensor) -> Tensor | None:
        """Bool[B, N] or None: True where pair ``candidate_ids[j]`` must never be a negative of pair ``ids[i]``
        although their ids and groups differ; ids Long[B], candidate_ids Long[N], both of this split.

        Groups express "the same item"; this expresses any other relation the data knows: multi-label items that
        share a label, a caption that is also true of another image. The trainer asks once per step (generators
        see it through :class:`negmine.MiningContext`'s exclusion helpers) and the FAISS corpus generator for its
        candidates. The default, None, adds nothing and costs nothing; an override costs O(B x N) per step.
        """
        return None


def equal_pairs(keys: Tensor, cand_keys: Tensor) -> tuple[Tensor, Tensor]:
    """(rows Long[E], cols Long[E]) of every i, j with ``keys[i] == cand_keys[j]``; keys Long[B], cand_keys Long[N]."""
    sorted_keys, order = cand_keys.sort()
    lo = torch.searchsorted(sorted_keys, keys, right=False)
    hi = torch.searchsorted(sorted_keys, keys, right=True)
    counts = hi - lo
    if bool((counts == 1).all()):  # each anchor matches one candidate (its own item): the usual case
        return torch.arange(keys.shape[0], device=keys.device), order[lo]
    rows = torch.repeat_interleave(torch.arange(keys.shape[0], device=keys.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    offset = torch.arange(rows.shape[0], device=keys.device) - starts[rows]
    return rows, order[lo[rows] + offset]


def shared_labels(labels: Tensor, candidate_labels: Tensor) -> Tensor:
    """Bool[B, N]: whether row i of ``labels`` (Bool[B, L]) and row j of ``candidate_labels`` (Bool[N, L]) share a
    label.

    Sparse labels (a few per item, as classes or tags) are joined on the label: O(nnz + marked pairs), about a
    third of the time of the dense product at B = N = 1024 with 128 classes. When the join would visit more (label,
    pair) matches than the B x N product has entries, the dense product is cheaper and is used.
    """
    rows, labels_a = labels.nonzero(as_tuple=True)
    cols, labels_c = candidate_labels.nonzero(as_tuple=True)
    n_labels = labels.shape[1]
    matches = int((torch.bincount(labels_a, minlength=n_labels) * torch.bincount(labels_c, minlength=n_labels)).sum())
    if matches > labels.shape[0] * candidate_labels.shape[0]:
        return (labels.float() @ candidate_labels.float().T) > 0  # a positive dot product of the multi-hot rows
    out = torch.zeros(labels.shape[0], candidate_labels.shape[0], dtype=torch.bool)
    i, j = equal_pairs(labels_a, labels_c)
    out[rows[i], cols[j]] = True
    return out


class TensorPairs(PairedDataset):
    """A paired dataset held in memory as two tensors (or tuples of tensors) with a leading item axis.

    a: [N, ...] inputs of side a; b: [N, ...] inputs of side b; groups: Long[N] or None; extras: name -> [N, ...].
    labels: Bool[N, L] or None: multi-label items; two pairs that share a label are never each other's negatives
        (a group is one label per item; labels let an item belong to several).
    """

    def __init__(self, a: Any, b: Any, groups: Tensor | None = None, extras: Mapping[str, Tensor] | None = None,
                 labels: Tensor | None = None):
        self.a, self.b, self.groups = a, b, groups
        self.extras = dict(extras or {})
        first = a if isinstance(a, Tensor) else a[0]
        self._n = int(first.shape[0])
        if labels is not None and (labels.dim() != 2 or labels.shape[0] != self._n):
            raise ValueError(f"labels: expected Bool[{self._n}, L], got shape {tuple(labels.shape)}")
        self.labels = None if labels is None else labels.bool()

    def __len__(self) -> int:
        return self._n

    def batch(self, ids: Tensor) -> Batch:
        ids = ids.long().cpu()
        return Batch(
            index_inputs(self.a, ids),
            index_inputs(self.b, ids),
            ids,
            None if self.groups is None else self.groups[ids],
            {k: v[ids] for k, v in self.extras.items()},
        )

    def side_batch(self, side: int, ids: Tensor) -> Any:
        return index_inputs(self.a if side == 0 else self.b, ids.long().cpu())

    def false_negatives(self, ids: Tensor, candidate_ids: Tensor) -> Tensor | None:
        """Bool[B, N]: the pairs sharing a label (None without ``labels``)."""
        if self.labels is None:
            return None
        return shared_labels(self.labels[ids.long().cpu()], self.labels[candidate_ids.long().cpu()])


class DualEncoder(nn.Module):
    """Base class for a two-tower model scored by one pairwise score function.

    Subclasses set ``sides`` (two display names), ``score`` (a score function from :mod:`negmine.scoring`) and
    implement ``encode``. The trainer never calls anything else, so any architecture fits.
    """

    sides: tuple[str, str] = ("a", "b")

    def __init__(self, score: Any) -> None:
        super().__init__()
        self.score = score

    def encode(self, side: int, inputs: Any) -> Embedding:  # pragma: no cover - interface
        """Encode a batch of one side's inputs (side 0 = a, 1 = b) into an :class:`Embedding` with N rows."""
        raise NotImplementedError

    def score_matrix(self, a: Embedding, b: Embedding) -> Tensor:
        """Float[Na, Nb]: score of every (a_i, b_j)."""
        return self.score.pairwise(a, b)

    def score_pairs(self, a: Embedding, b: Embedding) -> Tensor:
        """Float[N]: score of (a_i, b_i) for each i."""
        return self.score.paired(a, b)


@contextlib.contextmanager
def running_stats_kept(module: Any) -> Iterator[None]:
    """Run the block with ``module`` as it is (training mode included), then put back the running statistics of
    every layer that tracks them (BatchNorm's running mean, variance and batch count; InstanceNorm with
    ``track_running_stats``).

    A forward pass in training mode normalises with the batch's own statistics *and* moves the running ones that
    evaluation uses. A generator that encodes its own candidates to score them (a batch made only of GAN edits, say)
    would otherwise shift the statistics the model is evaluated with towards batches it never trains on. Anything
    that is not an ``nn.Module`` passes through untouched."""
    if not isinstance(module, nn.Module):
        yield
        return
    # The block works on copies and the original tensors are put back untouched: copying the old values back in
    # place would bump their autograd version, and a training-mode forward pass of the step saved them for backward.
    kept = [(layer, dict(layer.named_buffers(recurse=False)))
            for layer in module.modules() if getattr(layer, "track_running_stats", False)]
    for layer, buffers in kept:
        for name, value in buffers.items():
            setattr(layer, name, value.clone())
    try:
        yield
    finally:
        for layer, buffers in kept:
            for name, value in buffers.items():
                setattr(layer, name, value)


TaskBuilder = Callable[..., "Task"]


@attrs.define
class Task:
    """A built task: a model, its data splits, what it can provide to generators, and its evaluations.

    provides: capability names (see :class:`Capability`) generators may require.
    resources: objects behind capabilities, e.g. ``{"gan": generator_network}``.
    defaults: training settings of the chosen profile (``steps``, ``batch_size``, ``lr``, ...), overridden by the
        user's config and flags.
    evaluators: extra evaluations for ``negmine eval``: name -> ``fn(model=, task=, run_dir=, device=, split=) -> dict``
        (called with keywords; a ``"markdown"`` entry of the result is put into the report as is).
    data_digest: ``() -> str``, a short identity of the data on disk the splits read (a content hash), or None for
        data made from code and seed alone. The experiment runner records it in each run's ``provenance.json`` and
        flags records paired across different digests: a dataset built again can train differently even where its
        counts agree. Called lazily (hashing a dataset takes seconds), at most once per run.
    """

    name: str
    model: DualEncoder
    train: PairedDataset
    val: PairedDataset
    test: PairedDataset | None = None
    provides: frozenset[str] = frozenset()
    resources: dict[str, Any] = attrs.field(factory=dict)
    defaults: dict[str, Any] = attrs.field(factory=dict)
    evaluators: dict[str, Callable[..., dict]] = attrs.field(factory=dict)
    data_digest: Callable[[], str] | None = None


@attrs.frozen
class TaskSpec:
    """A registered task: ``build(profile=..., seed=..., options=...)`` returns a :class:`Task`.

    profiles: profile name -> one-line description; the first is the default.
    options: name -> (default, help) of task options settable with ``--task-option NAME=VALUE`` or the
        ``[task_options]`` table of a config file.
    """

    name: str
    build: TaskBuilder
    profiles: Mapping[str, str]
    description: str = ""
    options: Mapping[str, tuple[Any, str]] = attrs.field(factory=dict)

    @property
    def default_profile(self) -> str:
        return next(iter(self.profiles))
