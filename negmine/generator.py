"""The negative-generator contract.

A generator maps one :class:`MiningContext` (the batch, its encodings and the shared score matrix) to a
:class:`Negatives` record per side. The base class runs mining without gradient, validates every output in one place
and keeps the generator's random state, so a subclass only writes :meth:`NegativeGenerator.mine`.

Writing a generator::

    import attrs, torch
    from negmine import NegativeGenerator, Negatives, option

    class Easiest(NegativeGenerator):
        name = "easiest"

        @attrs.frozen
        class Options:
            k: int = option(1, "negatives per anchor and side", min=1)

        def mine(self, ctx):
            out = {}
            for side in self.active_sides(ctx):
                scores = ctx.scores[side].masked_fill(ctx.exclude, float("inf"))
                top = scores.topk(self.options.k, dim=1, largest=False)
                out[side] = Negatives.from_batch(top.indices, top.values, source=self.name)
            return out

Register it from a plugin with ``@negmine.hookimpl def negmine_register_generators(): return [Easiest]``.
"""

from __future__ import annotations

import enum
import functools
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs
import torch
from torch import Tensor

from negmine.errors import MissingCapabilityError, NegmineError, PluginError
from negmine.model import equal_pairs, running_stats_kept

SIDE_CHOICES = ("both", "a", "b")


class NegativeKind(str, enum.Enum):
    """How a :class:`Negatives` record points at its negatives."""

    BATCH = "batch"  # index: positions in the (global) batch of candidates
    DATASET = "dataset"  # index: ids in the training split; the trainer loads and encodes them
    INPUTS = "inputs"  # inputs: synthesized model inputs [B, K, ...]; the trainer encodes them


@attrs.frozen
class Negatives:
    """K negatives per anchor for one side.

    kind: see :class:`NegativeKind`.
    valid: Bool[B, K]; invalid slots are ignored by the loss (an anchor may have fewer than K negatives).
    score: Float[B, K] the generator's no-grad score of each negative against the anchor (telemetry; choosing).
    source: the generator name (set by the base class when left empty).
    index: Long[B, K] batch positions (``BATCH``) or dataset ids (``DATASET``); None for ``INPUTS``.
    inputs: model inputs with leading axes [B, K] (``INPUTS``), e.g. edited images Float[B, K, 3, H, W].
    meta: free-form per-negative provenance (edit region, ablated units, cluster, tries, ...), values with leading
        axes [B, K] where they are tensors. Exported with edits. The trainer reads three keys:
        ``category`` Long[B, K], an index into the generator's ``categories`` (-1: none), which splits the source's
        telemetry by category (e.g. the attribute an edit changed; see :class:`NegativeGenerator`);
        ``anchor_span`` Float[B, K, 2], read by the loss, for anchors that are sequences (audio frames,
        text tokens): the (start, end) of the part of the anchor each negative falsifies, as fractions of the
        anchor's valid length (e.g. the spoken word an edit changed). The negative is then compared with the
        positive on those frames only (``Trainer._span_scores``), so the loss does not push apart the parts of the
        anchor that stay true of it. ``centre_on_others`` Bool[B, K], also read by the loss (not together with
        ``anchor_span``): where True, the negative and its positive are compared by their scores against the anchor
        relative to their mean scores against the batch's other anchors (``Trainer._others_offset``), so a look
        that every negative of a kind shares, which lowers its score against every anchor alike, cannot meet the
        margin. ``matched_positive`` (model inputs with leading axes [B, K], like ``inputs``) with ``matched``
        Bool[B, K], also read by the loss (with neither of the two keys above): where ``matched`` is True, the
        negative is compared with that look-matched positive instead of its pair's own: an image of the anchor's
        content drawn the way the negative was (e.g. a GAN edit that redraws an object as itself), so that what
        the drawing does to every image it touches cannot meet the margin, and the loss teaches the matched
        positive's look to count for nothing (``Trainer._matched_scores``).
    """

    kind: NegativeKind
    valid: Tensor
    score: Tensor
    source: str = ""
    index: Tensor | None = None
    inputs: Any = None
    meta: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_batch(cls, index: Tensor, score: Tensor, valid: Tensor | None = None, source: str = "", **meta) -> Negatives:
        valid = torch.ones_like(index, dtype=torch.bool) if valid is None else valid
        return cls(NegativeKind.BATCH, valid, score, source, index=index, meta=meta)

    @classmethod
    def from_dataset(cls, ids: Tensor, score: Tensor, valid: Tensor | None = None, source: str = "", **meta) -> Negatives:
        valid = torch.ones_like(ids, dtype=torch.bool) if valid is None else valid
        return cls(NegativeKind.DATASET, valid, score, source, index=ids, meta=meta)

    @classmethod
    def from_inputs(cls, inputs: Any, score: Tensor, valid: Tensor | None = None, source: str = "", **meta) -> Negatives:
        valid = torch.ones(score.shape, dtype=torch.bool, device=score.device) if valid is None else valid
        return cls(NegativeKind.INPUTS, valid, score, source, inputs=inputs, meta=meta)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.valid.shape)  # type: ignore[return-value]


@attrs.frozen
class MiningContext:
    """Everything a generator sees for one training step (all tensors detached, on the training device).

    batch: the local :class:`negmine.Batch` of B pairs.
    embeddings: (side a, side b) encodings of the local batch.
    candidates: (side a, side b) encodings of the N candidates (the global batch; N == B in one process).
    scores: (side a, side b) Float[B, N]: ``scores[s][i, j]`` is the score of pair i with its side-s member replaced by
        candidate j; ``scores[s][i, positive[i]]`` is the positive score. Computed once per step and shared; in one
        process ``scores[0]`` is a transposed view of ``scores[1]`` (no copy is made for generators that do not
        read it row by row).
    positive: Long[B] the position of each anchor's own pair among the candidates.
    exclude: Bool[B, N] True where candidate j shares anchor i's id or group (the positive included): never a negative.
        The trainer passes None and gives ``candidate_groups`` instead; the mask is then built from the ids and
        groups the first time a generator reads ``ctx.exclude`` (and never when every generator uses
        :meth:`masked_scores`, :meth:`excluded_pairs` or :meth:`excluded_at`, which cost O(B + N + E), E the
        number of excluded pairs, instead of O(B x N)).
    candidate_ids: Long[N] dataset ids of the candidates.
    candidate_groups: Long[N] groups of the candidates (default: ``candidate_ids``); needed when ``exclude`` is None.
    unique_ids: the candidates' ids are distinct (the trainer's batches are drawn without replacement), so without
        groups (``batch.groups`` None, ``candidate_groups`` None) the excluded pairs are exactly (i, positive[i]).
    false_negatives: Bool[B, N] or None: more pairs that are never negatives, beyond shared ids and groups, as the
        training split's :meth:`negmine.PairedDataset.false_negatives` marks them (multi-label data; a caption that is
        also true of another image). ``exclude`` and every exclusion helper include them.
    """

    batch: Any
    embeddings: tuple[Any, Any]
    candidates: tuple[Any, Any]
    scores: tuple[Tensor, Tensor]
    positive: Tensor
    _exclude: Tensor | None
    candidate_ids: Tensor
    model: Any
    task: Any
    step: int
    margin: float
    device: torch.device
    candidate_groups: Tensor | None = None
    unique_ids: bool = False
    false_negatives: Tensor | None = None
    _cache: dict = attrs.field(factory=dict, init=False, repr=False, eq=False)

    @property
    def positive_scores(self) -> Tensor:
        """Float[B]: the score of each anchor's own pair."""
        if "positive_scores" not in self._cache:
            rows = torch.arange(self.positive.shape[0], device=self.positive.device)
            self._cache["positive_scores"] = self.scores[0][rows, self.positive]
        return self._cache["positive_scores"]

    @property
    def exclude(self) -> Tensor:
        """Bool[B, N]: True where candidate j shares anchor i's id or group, or is one of the ``false_negatives``
        (built once, on first use)."""
        if self._exclude is not None and self.false_negatives is None:
            return self._exclude
        if "exclude" not in self._cache:
            if self._exclude is not None:
                mask = self._exclude | self.false_negatives.to(self._exclude.device)
            else:  # the task's pairs, then the id and group pairs written in (sparse: no B x N comparisons)
                if self.false_negatives is not None:
                    mask = self.false_negatives.to(self.positive.device, copy=True)
                else:
                    mask = torch.zeros(self.positive.shape[0], self.candidate_ids.shape[0], dtype=torch.bool,
                                       device=self.positive.device)
                rows, cols = self._key_pairs()
                mask[rows, cols] = True
            self._cache["exclude"] = mask
        return self._cache["exclude"]

    def _anchor_keys(self) -> tuple[Tensor, Tensor]:
        return self.batch.ids.to(self.positive.device), self.batch.group_ids.to(self.positive.device)

    def _candidate_keys(self) -> tuple[Tensor, Tensor]:
        groups = self.candidate_ids if self.candidate_groups is None else self.candidate_groups
        return self.candidate_ids.to(self.positive.device), groups.to(self.positive.device)

    def _only_positives(self, ignore_false_negatives: bool = False) -> bool:
        """Whether the excluded candidates are exactly each anchor's own item (distinct ids, no groups; with
        ``ignore_false_negatives``, whatever the task's false negatives add)."""
        return (self._exclude is None and self.unique_ids and self.batch.groups is None
                and self.candidate_groups is None and (ignore_false_negatives or self.false_negatives is None))

    def excluded_pairs(self) -> tuple[Tensor, Tensor]:
        """(rows Long[E], cols Long[E]): every (anchor, candidate) pair that ``exclude`` marks, possibly repeated.

        Without a given mask this never builds the B x N mask: candidates are sorted by id and by group and each
        anchor's equal run is found by binary search (with ``unique_ids`` and no groups: the positives).
        """
        if "pairs" not in self._cache:
            if self._exclude is not None or self.false_negatives is not None and self.false_negatives.any():
                rows, cols = self.exclude.nonzero(as_tuple=True)  # the task's pairs have no sorted structure
            else:
                rows, cols = self._key_pairs()
            self._cache["pairs"] = (rows, cols)
        return self._cache["pairs"]

    def _key_pairs(self) -> tuple[Tensor, Tensor]:
        """(rows Long[E], cols Long[E]): the pairs sharing an id or a group (without the task's false negatives)."""
        if self._only_positives(ignore_false_negatives=True):
            return torch.arange(self.positive.shape[0], device=self.positive.device), self.positive
        ids, groups = self._anchor_keys()
        cand_ids, cand_groups = self._candidate_keys()
        if groups is ids and cand_groups is cand_ids:  # no groups: one key
            return equal_pairs(ids, cand_ids)
        r1, c1 = equal_pairs(groups, cand_groups)
        r2, c2 = equal_pairs(ids, cand_ids)
        return torch.cat([r1, r2]), torch.cat([c1, c2])

    def excluded_at(self, index: Tensor) -> Tensor:
        """Bool[B, K]: whether candidate ``index[i, k]`` (Long[B, K], in range) is excluded for anchor i; O(B x K)."""
        if self._exclude is not None:
            out = self._exclude.gather(1, index)
        elif self._only_positives():
            return index == self.positive[:, None]
        else:
            ids, groups = self._anchor_keys()
            cand_ids, cand_groups = self._candidate_keys()
            out = (cand_ids[index] == ids[:, None]) | (cand_groups[index] == groups[:, None])
        if self.false_negatives is not None:
            out = out | self.false_negatives.to(out.device).gather(1, index)
        return out

    def masked_scores(self, side: int, keep_layout: bool = False) -> Tensor:
        """Float[B, N]: a fresh copy of ``scores[side]`` with every excluded candidate at -inf.

        The copy is the generator's own (it may fill more entries in place); its values equal
        ``scores[side].masked_fill(exclude, -inf)``. By default it is contiguous (row-major), so a ``topk`` over it
        picks exactly what a ``topk`` over ``scores[side].contiguous().masked_fill(exclude, -inf)`` would, ties
        included; cost: one copy of the matrix (for a transposed view, the transposition that row-wise reading
        needs anyway) and E scattered writes.

        keep_layout: keep the strides of ``scores[side]`` when it is row-major or a transposed view of a row-major
            matrix (side a in one process), making the copy a plain memcpy instead of a transposition; for
            generators that only reduce along rows with vectorised element-wise kernels (``amax``, ``sub``), which
            read a transposed layout as fast as a row-major one, and whose results do not depend on the layout.
        """
        s = self.scores[side]
        if s.is_contiguous() or (keep_layout and s.dim() == 2 and s.T.is_contiguous()):
            out = s.clone()  # preserve_format: a transposed view's copy keeps strides (1, B), a plain memcpy
        else:
            out = s.contiguous()
        if self._exclude is not None or self.false_negatives is not None:
            return out.masked_fill_(self.exclude, float("-inf"))
        # the excluded entries are written through a flat view of the copy's storage (rows * stride0 + cols *
        # stride1, per layout); without groups they are (i, positive[i]): one add on a cached arange. Few and simple
        # torch calls: this runs once per side and step, and its fixed cost is what in-batch mining costs at B = 256
        s0, s1 = out.stride()
        key = ("flat", s0, s1)
        if key not in self._cache:
            if self._only_positives() and s0 > 0:
                rows = _strided_arange(self.positive.shape[0], s0, self.positive.device)
                self._cache[key] = torch.add(rows, self.positive, alpha=s1)
            else:
                rows, cols = self.excluded_pairs()
                self._cache[key] = rows * s0 + cols * s1
        out.as_strided((out.numel(),), (1,)).index_fill_(0, self._cache[key], float("-inf"))
        return out


def split_false_negatives(data: Any, ids: Tensor, candidate_ids: Tensor,
                          device: torch.device | None = None) -> Tensor | None:
    """Bool[B, N] or None: ``data.false_negatives(ids, candidate_ids)`` (see :meth:`negmine.PairedDataset.
    false_negatives`) checked and moved to ``device``; None when the split marks nothing or has no such method."""
    ask = getattr(data, "false_negatives", None)
    marked = None if ask is None else ask(ids, candidate_ids)
    if marked is None:
        return None
    want = (len(ids), len(candidate_ids))
    if not isinstance(marked, Tensor) or tuple(marked.shape) != want or marked.dtype != torch.bool:
        got = f"{marked.dtype} {tuple(marked.shape)}" if isinstance(marked, Tensor) else type(marked).__name__
        raise PluginError(f"{type(data).__name__}.false_negatives: expected Bool{list(want)}, got {got}")
    return marked if device is None else marked.to(device)


@functools.lru_cache(maxsize=32)
def _strided_arange(n: int, step: int, device: torch.device) -> Tensor:
    """Long[n]: 0, step, 2 step, ... Cached across steps and shared: never written (callers add out of place)."""
    return torch.arange(0, n * step, step, device=device) if n else torch.zeros(0, dtype=torch.long, device=device)


def option(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: Sequence[Any] | None = None,
    type: type | None = None,
) -> Any:
    """Declare a generator option: an attrs field whose metadata drives CLI flags, TOML keys and ``negmine plugins``.

    ``type`` defaults to the type of ``default``; ``min``/``max`` are inclusive bounds; ``choices`` a closed set.
    """
    kind = type if type is not None else builtins_type(default)
    validators = []
    if choices is not None:
        validators.append(attrs.validators.in_(tuple(choices)))
    if min is not None:
        validators.append(_optional(attrs.validators.ge(min)))
    if max is not None:
        validators.append(_optional(attrs.validators.le(max)))
    meta = {"help": help, "min": min, "max": max, "choices": tuple(choices) if choices else None, "type": kind}
    return attrs.field(default=default, validator=validators or None, metadata={"negmine": meta})


builtins_type = type


def _optional(validator: Any) -> Any:
    return attrs.validators.optional(validator)


def option_specs(options_cls: type) -> list[dict[str, Any]]:
    """The declared options of an ``Options`` class: dicts with name, type, default, help, min, max, choices."""
    specs = []
    for field in attrs.fields(options_cls):
        meta = dict(field.metadata.get("negmine", {}))
        default = field.default
        kind = meta.get("type") or builtins_type(default)
        specs.append(
            {
                "name": field.name,
                "type": getattr(kind, "__name__", str(kind)),
                "default": default,
                "help": meta.get("help", ""),
                "min": meta.get("min"),
                "max": meta.get("max"),
                "choices": list(meta["choices"]) if meta.get("choices") else None,
            }
        )
    return specs


@attrs.frozen
class NoOptions:
    """A generator without options."""


class NegativeGenerator:
    """Base class of every negative source.

    Class attributes a subclass sets:
      name: the registered name (``--negatives NAME``, TOML ``negatives = [...]``).
      Options: an attrs class built with :func:`option` fields.
      requires: capabilities the task must provide (see :class:`negmine.Capability`).
      encodes: set False when ``mine`` never runs the model, to skip saving its running statistics.
      categories: names of the kinds of negative the generator tags in ``meta["category"]`` (Long[B, K], an index
        into them, -1 none): the trainer then logs each category's hardness (``NAME/sideS/CATEGORY/active`` ...) and,
        in a ``hardest`` group, which category each anchor's hardest negative had (``groupG/sideS/hardest/...``).

    Instances are created per stage by the trainer with their options, a seed and the built task. A generator that
    keeps state across steps (an index, clusters) stores it as tensors and plain values in :meth:`state_dict` so that
    checkpoints load with ``weights_only=True``, and may implement lifecycle hooks (``negmine_step_end`` ...) as methods
    marked ``@negmine.hookimpl``.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    requires: ClassVar[frozenset[str]] = frozenset()
    # False when ``mine`` never runs the model (it only reads the context): the running statistics need no saving
    encodes: ClassVar[bool] = True
    categories: ClassVar[tuple[str, ...]] = ()
    # True when ``mine``'s valid BATCH indices are in [0, N) and never excluded by construction (every excluded
    # candidate scored -inf, and a slot is valid only above -inf), as its own tests check against the full validation:
    # ``generate`` then checks kinds, shapes and dtypes only and skips the O(B x K) tensor checks of the values (a
    # dozen small torch calls and three host syncs per side and step, the fixed cost that dominates in-batch mining
    # at small batches). Not inherited: a subclass, which may override ``mine``, is validated in full unless it sets
    # it itself. Leave False in your own generators.
    values_valid_by_construction: ClassVar[bool] = False

    def __init__(self, options: Any = None, *, seed: int = 0, task: Any = None) -> None:
        self.options = options if options is not None else self.Options()
        self.task = task
        self.seed = seed
        self.rng = torch.Generator().manual_seed(seed)

    # -- what subclasses implement ------------------------------------------------------------------------------------

    def mine(self, ctx: MiningContext) -> dict[int, Negatives]:  # pragma: no cover - interface
        """Return negatives for some or all sides: ``{0: Negatives, 1: Negatives}`` (side 0 = a, 1 = b)."""
        raise NotImplementedError

    # -- the template method ------------------------------------------------------------------------------------------

    def generate(self, ctx: MiningContext) -> dict[int, Negatives]:
        """Mine without gradient and without moving the model's running statistics (a generator may encode its own
        candidates in training mode), label with the source name, and validate the result."""
        try:
            with torch.no_grad():
                if self.encodes:
                    with running_stats_kept(ctx.model):
                        out = self.mine(ctx)
                else:
                    out = self.mine(ctx)
        except NegmineError:
            raise  # already a message for the user (a missing file, a refused GAN layer, ...)
        except Exception as exc:
            # a bug in a plugin: name the plugin and the line, so the user knows whom to ask (the traceback stays
            # chained for Python callers)
            raise PluginError(f"{self.describe()} raised {type(exc).__name__} in mine(): {exc} "
                              f"({_raised_at(exc, type(self))})") from exc
        if not isinstance(out, Mapping):
            raise PluginError(f"{self.describe()}: mine() must return a dict {{side: negmine.Negatives}} (side 0 = a, "
                              f"1 = b; {{}} for none), got {type(out).__name__}")
        checked = {}
        for side, negs in out.items():
            if side not in (0, 1):
                raise PluginError(f"generator {self.name!r} returned negatives for side {side!r}; sides are 0 and 1")
            if not isinstance(negs, Negatives):
                raise PluginError(f"{self.describe()}: mine() returned a {type(negs).__name__} for side {side}; "
                                  "expected a negmine.Negatives (Negatives.from_batch, from_dataset or from_inputs)")
            if not negs.source:
                negs = attrs.evolve(negs, source=self.name)
            self._validate(ctx, side, negs)
            checked[side] = negs
        return checked

    def _validate(self, ctx: MiningContext, side: int, negs: Negatives) -> None:
        b = ctx.positive.shape[0]
        where = f"{self.describe()}, side {side}"
        if negs.valid.dtype != torch.bool or negs.valid.dim() != 2 or negs.valid.shape[0] != b:
            raise PluginError(f"{where}: valid must be Bool[B={b}, K], got {tuple(negs.valid.shape)} {negs.valid.dtype}")
        if negs.score.shape != negs.valid.shape:
            raise PluginError(f"{where}: score shape {tuple(negs.score.shape)} != valid shape {tuple(negs.valid.shape)}")
        if negs.kind in (NegativeKind.BATCH, NegativeKind.DATASET):
            if negs.index is None or negs.index.shape != negs.valid.shape:
                raise PluginError(f"{where}: kind {negs.kind.value} needs index Long[B, K] shaped like valid")
            if negs.index.dtype not in (torch.int64, torch.int32):
                raise PluginError(f"{where}: index must be an integer tensor, got {negs.index.dtype}")
        category = negs.meta.get("category")
        if category is not None:
            if not self.categories:
                raise PluginError(f"{where}: meta['category'] needs the generator's class attribute `categories` "
                                  "(the names its indices stand for)")
            if (not isinstance(category, torch.Tensor) or category.shape != negs.valid.shape
                    or category.dtype not in (torch.int64, torch.int32)):
                raise PluginError(f"{where}: meta['category'] must be Long[B, K] shaped like valid, got "
                                  f"{getattr(category, 'shape', type(category).__name__)} "
                                  f"{getattr(category, 'dtype', '')}".rstrip())
            low, high = category.aminmax() if category.numel() else (torch.tensor(-1), torch.tensor(-1))
            if int(low) < -1 or int(high) >= len(self.categories):
                raise PluginError(f"{where}: meta['category'] must index the {len(self.categories)} categories "
                                  f"(-1: none), got values in [{int(low)}, {int(high)}]")
        span = negs.meta.get("anchor_span")
        if span is not None:
            if (not isinstance(span, torch.Tensor) or not span.is_floating_point()
                    or tuple(span.shape) != (*negs.valid.shape, 2)):
                raise PluginError(f"{where}: meta['anchor_span'] must be Float[B, K, 2] (start, end fractions of the "
                                  f"anchor's length) with B, K like valid {list(negs.valid.shape)}, got "
                                  f"{getattr(span, 'shape', type(span).__name__)} {getattr(span, 'dtype', '')}".rstrip())
            if negs.kind == NegativeKind.BATCH:
                raise PluginError(f"{where}: meta['anchor_span'] is for input or dataset-id negatives (the trainer "
                                  "re-encodes those); batch negatives are scored from the step's score matrix")
            used = span[negs.valid.to(span.device)]
            if used.numel() and not bool(((used >= 0) & (used <= 1)).all() & (used[:, 0] < used[:, 1]).all()):
                raise PluginError(f"{where}: meta['anchor_span'] of every valid slot needs 0 <= start < end <= 1")
        centre = negs.meta.get("centre_on_others")
        if centre is not None:
            if (not isinstance(centre, torch.Tensor) or centre.dtype != torch.bool
                    or tuple(centre.shape) != tuple(negs.valid.shape)):
                raise PluginError(f"{where}: meta['centre_on_others'] must be Bool[B, K] shaped like valid "
                                  f"{list(negs.valid.shape)}, got {getattr(centre, 'shape', type(centre).__name__)} "
                                  f"{getattr(centre, 'dtype', '')}".rstrip())
            if negs.kind == NegativeKind.BATCH:
                raise PluginError(f"{where}: meta['centre_on_others'] is for input or dataset-id negatives (the "
                                  "trainer re-encodes those); batch negatives are scored from the step's score matrix")
            if span is not None:
                raise PluginError(f"{where}: meta['centre_on_others'] and meta['anchor_span'] cannot be combined: a "
                                  "span-localized negative is compared on part of its anchor, the centring on whole "
                                  "anchors")
        matched_positive = negs.meta.get("matched_positive")
        if matched_positive is not None or "matched" in negs.meta:
            matched = negs.meta.get("matched")
            if matched_positive is None or not isinstance(matched, torch.Tensor) or matched.dtype != torch.bool \
                    or tuple(matched.shape) != tuple(negs.valid.shape):
                raise PluginError(f"{where}: meta['matched_positive'] (inputs with leading axes [B, K]) needs "
                                  f"meta['matched'] Bool[B, K] shaped like valid {list(negs.valid.shape)} (which "
                                  "negatives carry one), and the other way round")
            leading = [tuple(t.shape[:2]) for t in _tensors(matched_positive)]
            if not leading or any(shape != tuple(negs.valid.shape) for shape in leading):
                raise PluginError(f"{where}: meta['matched_positive'] must be tensors (or a tuple, list or dict of "
                                  f"them) with leading axes [B, K] = {list(negs.valid.shape)} like valid, got "
                                  f"{[list(x) for x in leading] or 'none'}")
            if negs.kind != NegativeKind.INPUTS:
                raise PluginError(f"{where}: meta['matched_positive'] is for input negatives (drawn by the "
                                  f"generator, as their matched positives are), not {negs.kind.value} negatives")
            if span is not None or centre is not None:
                raise PluginError(f"{where}: meta['matched_positive'] cannot be combined with meta['anchor_span'] or "
                                  "meta['centre_on_others']: each replaces how a negative is compared with its "
                                  "positive")
        if not type(self).__dict__.get("values_valid_by_construction", False):  # declared on this very class
            self._validate_values(ctx, side, negs)
        if negs.kind == NegativeKind.INPUTS:
            if negs.inputs is None:
                raise PluginError(f"{where}: kind inputs needs inputs [B, K, ...]")
            leading = [tuple(t.shape[:2]) for t in _tensors(negs.inputs)]
            if not leading or any(shape != tuple(negs.valid.shape) for shape in leading):
                raise PluginError(f"{where}: inputs must be tensors (or a tuple, list or "
                                  f"dict of them) with leading axes [B, K] = {list(negs.valid.shape)} like valid, "
                                  f"got leading axes {[list(x) for x in leading] or 'none'}")

    def _validate_values(self, ctx: MiningContext, side: int, negs: Negatives) -> None:
        """The checks that read the tensors: valid BATCH indices in [0, N) and not excluded, valid DATASET ids not the
        anchor's own (run after the shape checks)."""
        where = f"{self.describe()}, side {side}"
        if negs.kind == NegativeKind.BATCH:
            n = ctx.candidate_ids.shape[0]
            index = negs.index.long()
            low, high = torch.where(negs.valid, index, 0).aminmax()
            if int(low) < 0 or int(high) >= n:
                raise PluginError(f"{where}: batch index out of range [0, {n})")
            if bool(ctx.excluded_at(index.clamp(0, n - 1)).logical_and_(negs.valid).any()):  # O(B x K), no B x N mask
                raise PluginError(f"{where}: returned a negative that shares the anchor's id or group")
        elif negs.kind == NegativeKind.DATASET:
            anchor_ids = ctx.batch.ids.to(negs.index.device)[:, None]
            if ((negs.index == anchor_ids) & negs.valid).any():
                raise PluginError(f"{where}: returned the anchor's own dataset id as a negative")

    def describe(self) -> str:
        """``generator 'NAME' (module.Class)``: how messages name this generator (a ``-p`` file by its path)."""
        cls = type(self)
        module = cls.__module__
        if module.startswith("negmine_local_plugin_"):  # the name negmine.plugins gives a module loaded from a file
            module = getattr(sys.modules.get(module), "__file__", None) or module
        return f"generator {self.name!r} ({module}: {cls.__qualname__})"

    # -- helpers for subclasses ---------------------------------------------------------------------------------------

    def active_sides(self, ctx: MiningContext) -> list[int]:
        """The sides selected by an optional ``sides`` option ("both", "a", "b" or a model side name)."""
        which = getattr(self.options, "sides", "both")
        return resolve_sides(which, getattr(ctx.model, "sides", ("a", "b")))

    @classmethod
    def check_requirements(cls, task: Any) -> None:
        """Raise :class:`MissingCapabilityError` naming every capability the task lacks."""
        provided = {str(getattr(p, "value", p)) for p in getattr(task, "provides", ())}
        needed = {str(getattr(r, "value", r)) for r in cls.requires}
        missing = sorted(needed - provided)
        if missing:
            raise MissingCapabilityError(
                f"generator {cls.name!r} needs {', '.join(missing)} from the task, but task "
                f"{getattr(task, 'name', '?')!r} provides only {', '.join(sorted(provided)) or 'nothing'}. "
                "Choose another generator or a task that provides it."
            )

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only (checkpoints load with ``weights_only=True``)."""
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.set_state(state["rng"])


def _tensors(obj: Any) -> list[Tensor]:
    """Every tensor in a model-input structure (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _raised_at(exc: BaseException, cls: type) -> str:
    """``file:line`` where an exception was raised: the deepest frame in the generator's own file, else the
    deepest frame."""
    import inspect
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    try:
        own = inspect.getsourcefile(cls)
    except TypeError:
        own = None
    mine = [f for f in frames if own and f.filename == own]
    frame = (mine or frames or [None])[-1]
    return "no traceback" if frame is None else f"{frame.filename}:{frame.lineno}"


def resolve_sides(which: str, names: Sequence[str]) -> list[int]:
    if which == "both":
        return [0, 1]
    if which == "a" or which == names[0]:
        return [0]
    if which == "b" or which == names[1]:
        return [1]
    from negmine.errors import UnknownNameError

    raise UnknownNameError("side", which, ["both", "a", "b", *names])
