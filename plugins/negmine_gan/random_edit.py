"""``gan-random``: ablate randomly chosen GAN units where the model looks, until the image really changes.

For each pair i (image from latent z_i, caption A_i): the matchmap M = matchmap(I_i, A_i) gives the most salient
location (h*, w*, t*) and a heat map H = max_t M; the edit region R is the connected part of H >= tau_h * max H
around (h*, w*), dilated once (8x8, like the GAN layer). Each unit of the layer is ablated inside R with probability p:
I_n = G(z_i; h <- h * (1 - a)). The edit is accepted when the change ratio inside R's pixels reaches the acceptance
threshold; otherwise p rises and the threshold falls, and the items not accepted yet are retried together, so the
loop always ends (the threshold reaches 0 by ``max_tries``).
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import Tensor

from negmine.generator import MiningContext, Negatives, option
from negmine.model import Embedding
from negmine_gan.base import (
    GanEditGenerator,
    centre_on_others_option,
    check_centring,
    check_keep_changes,
    drop_still_true_option,
    edit_fraction_option,
    keep_changes_mode_option,
    keep_changes_option,
    localize_option,
    to_model_input,
    tries_stats,
    warm_start_option,
)
from negmine_gan.edit import edit_until_changed, geodesic_region, upsample_mask

__all__ = ["GanRandomEdits", "salient", "to_model_input"]


def salient(model: Any, image: Embedding, audio: Embedding) -> tuple[Tensor, Tensor]:
    """Heat map Float[B, H, W] (max over valid frames of the matchmap, normalised by its max) and the argmax
    location Long[B, 2] (row, col) of the 3-D matchmap."""
    mm = model.score.matchmap(image, audio)  # [B, H, W, T]
    if audio.lengths is not None:
        t = mm.shape[-1]
        valid = torch.arange(t, device=mm.device)[None, :] < audio.lengths[:, None]
        mm = mm.masked_fill(~valid[:, None, None, :], float("-inf"))
    heat = mm.amax(-1)
    b, h, w = heat.shape
    flat = heat.flatten(1).argmax(1)
    seeds = torch.stack([flat // w, flat % w], dim=1)
    lo = heat.flatten(1).amin(1)[:, None, None]
    hi = heat.flatten(1).amax(1)[:, None, None]
    return (heat - lo) / (hi - lo + 1e-10), seeds


class GanRandomEdits(GanEditGenerator):
    """Edited GAN images: random units of one layer ablated in the most salient region (paper §5.4)."""

    name = "gan-random"
    requires = frozenset({"gan", "latents", "dense_maps"})

    @attrs.frozen
    class Options:
        layer: str = option("layer4", "GAN layer to edit (its output must be on the model's image grid)")
        p: float = option(0.2, "initial probability of ablating each unit (paper text 0.2; paper code 0.5 fixed)",
                          min=0.0, max=1.0)
        p_step: float = option(0.1, "added to p after each rejected try (0: fixed p, as the paper code)", min=0.0,
                               max=1.0)
        region_threshold: float = option(0.95, "tau_h: the region is H >= tau_h * max H around the peak", min=0.0,
                                         max=1.0)
        accept: float = option(0.95, "initial change ratio inside the region needed to accept an edit", min=0.0)
        accept_step: float = option(0.05, "subtracted from the acceptance threshold after each rejected try",
                                    min=0.0)
        max_tries: int = option(20, "tries before an edit is accepted whatever its change ratio", min=1)
        warm_start: float = warm_start_option()
        edit_fraction: float = edit_fraction_option()
        drop_still_true: bool = drop_still_true_option()
        keep_changes: str = keep_changes_option()
        keep_changes_mode: str = keep_changes_mode_option()
        localize: str = localize_option()
        centre_on_others: bool = centre_on_others_option()

        def __attrs_post_init__(self) -> None:
            """Cross-option checks; a ValueError here is reported by the config validation, before training."""
            check_keep_changes(self)
            check_centring(self)

    def unit_ablation(self, p: Tensor, channels: int) -> Tensor:
        """Float[P, C]: each unit ablated with its item's probability p (Float[P])."""
        return (torch.rand(p.shape[0], channels, generator=self.rng) < p.cpu()[:, None]).float()

    def mine(self, ctx: MiningContext) -> dict[int, Negatives]:
        o = self.options
        editor = self._editor()
        z_all = ctx.batch.extras["latent"].to(ctx.device)
        b = z_all.shape[0]
        feats, original = self.originals(ctx, z_all)  # [B, C, h, w], [B, 3, R, R]
        heat, seeds = salient(ctx.model, ctx.embeddings[0], ctx.embeddings[1])
        self.check_grid(feats, ctx.embeddings[0], z_all)
        items = self.edit_items(b)  # the anchors edited this step
        dev_items = items.to(ctx.device)
        z, feats, edit_original = z_all[dev_items], feats[dev_items], original[dev_items]
        m = items.shape[0]
        region = geodesic_region(heat[dev_items], seeds[dev_items],
                                 torch.full((m,), o.region_threshold, device=heat.device)).cpu()
        pixels = upsample_mask(region, original.shape[-1]).to(original.device)

        def choose(pending: Tensor, attempt: int) -> tuple[Tensor, Tensor]:
            # escalation level `attempt`: each unit ablated with probability p + attempt * p_step
            p = torch.full((pending.shape[0],), min(1.0, o.p + attempt * o.p_step))
            return self.unit_ablation(p, feats.shape[1]).bool(), region[pending]

        start = self.escalation_start()
        result = edit_until_changed(editor, z, feats, edit_original, pixels, choose, self.to_input, o.accept,
                                    o.accept_step, o.max_tries, start=start)
        edited, units, tries, ratios = result["edited"], result["units"], result["tries"], result["change_ratio"]
        self.update_start(tries)
        inputs = self.to_input(original).clone()
        inputs[dev_items] = self.to_input(edited)
        with torch.no_grad():
            score = ctx.model.score_pairs(ctx.model.encode(0, inputs[dev_items]), ctx.embeddings[1][dev_items])
        self.last_stats = {**tries_stats(tries, result["accepted"]), "change_ratio": float(ratios.mean()),
                           "units_ablated": float(units.float().sum(1).mean()), "start_level": float(start)}
        full = self.scatter_items
        kept = self.kept_edits(ctx, items, inputs[dev_items])
        spans, kept = self.anchor_spans(ctx, items, inputs[dev_items], kept, b)
        valid = full(items, kept[:, None], b, False)
        return {0: Negatives.from_inputs(inputs[:, None], full(items, score[:, None], b), valid.to(score.device),
                                         source=self.name, **spans, **self.centring(valid),
                                         region=full(items, region, b, False)[:, None],
                                         units=full(items, units, b, False)[:, None],
                                         tries=full(items, tries, b)[:, None],
                                         level=full(items, tries + start - 1, b)[:, None],
                                         change_ratio=full(items, ratios, b)[:, None])}
