"""In-batch hard negatives mined from the shared score matrix (no re-encoding, no second distance matrix)."""

from __future__ import annotations

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
        ``topk`` over it (``strategy=hardest``); the options that restrict the window add their masks in place.
        """
        o = self.options
        out = {}
        for side in self.active_sides(ctx):
            scores = ctx.scores[side]
            masked = ctx.masked_scores(side)  # [B, N], our own copy
            window = self._window(ctx, scores, masked)
            if window is not None:
                masked.masked_fill_(~window, NEG_INF)
            if o.strategy == "sample":
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
            valid = value > NEG_INF
            out[side] = Negatives.from_batch(index, scores.gather(1, index), valid, source=self.name)
        return out
