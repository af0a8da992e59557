"""Uniformly drawn in-batch negatives."""

from __future__ import annotations

import attrs
import torch

from negmine.generator import SIDE_CHOICES, MiningContext, NegativeGenerator, Negatives, option


class RandomNegatives(NegativeGenerator):
    """Uniformly drawn other items of the batch, per anchor and side (DaveNet's sampled impostors)."""

    name = "random"

    @attrs.frozen
    class Options:
        k: int = option(1, "negatives per anchor and side, drawn without replacement", min=1)
        sides: str = option("both", "which sides get negatives: both, a or b", choices=SIDE_CHOICES)

    encodes = False  # reads the shared score matrix only

    def mine(self, ctx: MiningContext) -> dict[int, Negatives]:
        b, n = ctx.scores[1].shape
        rows, cols = ctx.excluded_pairs()  # no B x N mask
        out = {}
        for side in self.active_sides(ctx):
            # uniform keys, excluded candidates pushed to -1: the top k keys are a uniform sample without replacement
            keys = torch.rand(b, n, generator=self.rng).to(ctx.device)
            keys[rows, cols] = -1.0
            k = min(self.options.k, n)
            top = keys.topk(k, dim=1)
            valid = top.values >= 0
            score = ctx.scores[side].gather(1, top.indices)
            out[side] = Negatives.from_batch(top.indices, score, valid)
        return out
