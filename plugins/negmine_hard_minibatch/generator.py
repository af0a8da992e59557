"""In-batch hard negatives mined from the shared score matrix (no re-encoding, no second distance matrix)."""

from __future__ import annotations

import functools

import attrs
import torch
from torch import Tensor

from negmine.generator import SIDE_CHOICES, MiningContext, NegativeGenerator, Negatives, option

NEG_INF = float("-inf")


def rank_desc(scores: Tensor) -> Tensor:
    """Long[B, N]: the rank of each candidate in its row when sorted by descending score (0 = highest)."""
    order = scores.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return ranks


# torch's CPU topk sorts a row with std::partial_sort when k * 64 <= N (below that, with std::nth_element, whose choice
# among tied scores is not the first one): for k = 1 it then returns the first maximum of the row, NaN counting as the
# largest value. :func:`first_max` reproduces exactly that choice with vectorised kernels.
PARTIAL_SORT_MIN_N = 64
FIRST_MAX_DTYPES = (torch.float32, torch.float64)


@functools.lru_cache(maxsize=16)
def _position_keys(n: int, dtype: torch.dtype) -> tuple[Tensor, float]:
    """(Float[N] -j / 2**e for j = 0 ... N-1, 2**e) with 2**e >= 2N: distinct, decreasing, exact in ``dtype``
    (N < 2**23), all in (-1/2, 0]. Cached (read only): a step builds no tensor for it."""
    scale = float(2 ** max(1, (2 * n - 1).bit_length()))
    return torch.arange(n, dtype=torch.float64).div_(-scale).to(dtype), scale


def first_max_applies(scores: Tensor) -> bool:
    """Whether :func:`first_max` can stand in for ``topk(1)`` over Float[B, N] scores of this device, dtype and shape
    (it may still decline on their values: a NaN or +inf maximum). Elsewhere (CUDA included) the generator keeps the
    contiguous copy and ``topk``, as before."""
    return (scores.device.type == "cpu" and scores.dtype in FIRST_MAX_DTYPES and scores.dim() == 2
            and PARTIAL_SORT_MIN_N <= scores.shape[1] < 2**23 and scores.shape[0] > 0)


def first_max(masked: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """(value Float[B, 1], index Long[B, 1], valid Bool[B, 1] = value > -inf): each row's maximum and the first
    position holding it, equal bit for bit to ``masked.topk(1, dim=1)`` on the CPU for N >= 64 (index 0 in a row of
    -inf only); None where that is not guaranteed (another device or dtype, N < 64, a NaN or +inf maximum), for the
    caller to use ``topk``.

    masked: Float[B, N], any layout, consumed (overwritten) unless None is returned. ``max(dim=1)`` and ``topk``
    track an index per element in scalar loops, and comparisons into Bool tensors are slow on the CPU too; this takes
    four vectorised passes instead: v = the row maxima; key = sign(masked - v) - j / 2**e, which is -j / 2**e > -1/2
    exactly where ``masked[i, j] == v[i]`` and at most -1 elsewhere; the row maximum of key names the first such j.
    Every step is exact (no rounding), so ties resolve as in topk.
    """
    if not first_max_applies(masked):
        return None
    n = masked.shape[1]
    value = masked.amax(dim=1, keepdim=True)  # [B, 1]
    # rows of -inf only (every candidate excluded) subtract the lowest finite value instead, as -inf - -inf is NaN
    floor = value.clamp_min(torch.finfo(masked.dtype).min)
    if not floor.amax().item() < float("inf"):  # a NaN or +inf maximum: sign(masked - v) would be NaN somewhere
        return None
    keys, scale = _position_keys(n, masked.dtype)
    key = masked.sub_(floor).sign_().add_(keys).amax(dim=1, keepdim=True)  # [B, 1]
    # key is -j / 2**e, or -1 in a row of -inf only (sign -1 everywhere, position 0): frac maps that -1 to 0, the
    # position topk returns there, and keeps every other key; then -(-j / 2**e) * 2**e = j, exactly
    index = key.frac_().mul_(-scale).long()
    return value, index, value.isfinite()  # value is finite or -inf here: valid = value > -inf


class HardMinibatch(NegativeGenerator):
    """Hard negatives from the batch: the hardest, the hardest semi-hard, or a sample from the top-k.

    Items sharing the anchor's id or group are never chosen. A rank window (``rank_min``, ``rank_max``) skips the very
    top (likely false negatives) or caps the depth; ``min_gap`` keeps only negatives scoring at least that much below
    the positive (an absolute-margin false-negative guard).
    """

    name = "hard-minibatch"

    @attrs.frozen
    class Options:
        k: int = option(1, "negatives per anchor and side", min=1)
        strategy: str = option(
            "hardest",
            "hardest: top-k scores; semihard: hardest with pos - margin < neg < pos; sample: k drawn from the top_k",
            choices=("hardest", "semihard", "sample"),
        )
        top_k: int = option(10, "pool size for strategy=sample", min=1)
        temperature: float = option(
            0.0, "strategy=sample: 0 draws uniformly from the pool, > 0 draws with softmax(score / temperature)", min=0.0
        )
        rank_min: int = option(0, "skip the rank_min hardest candidates (rank window start)", min=0)
        rank_max: int = option(0, "only candidates ranked below rank_max (0: no cap)", min=0)
        min_gap: float = option(
            None, "keep only negatives with score <= positive - min_gap (unset: no filter)", type=float
        )
        sides: str = option("both", "which sides get negatives: both, a or b", choices=SIDE_CHOICES)

    encodes = False  # reads the shared score matrix only
    # every excluded candidate is -inf in the copy that is ranked, and a slot is valid only above -inf, so a valid
    # index is in range and never excluded (tests/plugins/test_mining_floor.py checks it with the full validation)
    values_valid_by_construction = True

    def allowed(self, ctx: MiningContext, scores: Tensor) -> Tensor:
        """Bool[B, N]: candidates this generator may choose from, before the strategy picks (a reference form of
        what :meth:`mine` computes without building B x N masks it does not need)."""
        ok = ~ctx.exclude
        window = self._window(ctx, scores, scores.masked_fill(ctx.exclude, NEG_INF))
        return ok if window is None else ok & window

    def _window(self, ctx: MiningContext, scores: Tensor, masked: Tensor) -> Tensor | None:
        """Bool[B, N] of the candidates the rank window, ``min_gap`` and ``semihard`` keep (None: no such option).

        scores: Float[B, N] the side's scores; masked: the same with excluded candidates at -inf (ranks are counted
        among the candidates that are not excluded).
        """
        o = self.options
        ok = None
        if o.rank_min or o.rank_max:
            ranks = rank_desc(masked)
            ok = ranks >= o.rank_min
            if o.rank_max:
                ok &= ranks < o.rank_max
        if o.min_gap is not None:
            gap = scores <= ctx.positive_scores[:, None] - o.min_gap
            ok = gap if ok is None else ok & gap
        if o.strategy == "semihard":
            pos = ctx.positive_scores[:, None]
            semi = (scores < pos) & (scores > pos - ctx.margin)
            ok = semi if ok is None else ok & semi
        return ok

    def mine(self, ctx: MiningContext) -> dict[int, Negatives]:
        """Per active side: Negatives(index Long[B, k] batch positions, score Float[B, k], valid Bool[B, k]).

        The cost is one copy of the side's B x N scores with the excluded candidates written to -inf, then a
        ``topk`` over it (``strategy=hardest``), or for k = 1 on the CPU :func:`first_max` (four vectorised passes
        over the copy, in the layout of the scores: side a's transposed view is not transposed); the options that
        restrict the window add their masks in place.
        """
        o = self.options
        out = {}
        # k = 1 without a rank window (which sorts rows): the first maximum, read in the scores' own layout (side a
        # needs no transposition)
        first = o.k == 1 and o.strategy != "sample" and not (o.rank_min or o.rank_max)
        for side in self.active_sides(ctx):
            scores = ctx.scores[side]
            fast = first and first_max_applies(scores)
            masked = ctx.masked_scores(side, keep_layout=fast)  # [B, N], our own copy
            window = self._window(ctx, scores, masked)
            if window is not None:
                masked.masked_fill_(~window, NEG_INF)
            top = first_max(masked) if fast else None
            if top is not None:
                value, index, valid = top
            elif o.strategy == "sample":
                pool = masked.topk(min(o.top_k, masked.shape[1]), dim=1)  # [B, P]
                valid_pool = pool.values > NEG_INF
                if o.temperature > 0:
                    logits = (pool.values / o.temperature).masked_fill(~valid_pool, NEG_INF)
                    gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=self.rng).clamp(1e-12, 1)))
                    keys = logits + gumbel.to(logits.device)
                else:
                    keys = torch.rand(pool.values.shape, generator=self.rng).to(masked.device)
                keys = keys.masked_fill(~valid_pool, NEG_INF)
                pick = keys.topk(min(o.k, keys.shape[1]), dim=1).indices
                index = pool.indices.gather(1, pick)
                value = pool.values.gather(1, pick)
            else:
                value, index = masked.topk(min(o.k, masked.shape[1]), dim=1)
            if top is None:
                valid = value > NEG_INF
            out[side] = Negatives.from_batch(index, scores.gather(1, index), valid, source=self.name)
        return out
