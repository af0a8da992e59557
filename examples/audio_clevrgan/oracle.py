"""``render-edit``: the oracle upper bound of drawn negatives (paper §6.5).

For a rendered dataset the renderer knows every training scene, so the perfect "drawn" negative exists: the same
scene with exactly one attribute of one object changed, re-rendered. It is what GAN edits approximate (a GAN edit may
change nothing, several things, or leak outside the object); training with it bounds what edits can give.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import torch

from negmine.errors import ConfigError
from negmine.generator import MiningContext, NegativeGenerator, Negatives, option

from .vocab import ATTRIBUTES


class RenderedEdits(NegativeGenerator):
    """Each anchor's scene re-rendered with one attribute of one object changed (side a, UInt8 images)."""

    name = "render-edit"
    requires = frozenset({"scenes"})

    @attrs.frozen
    class Options:
        attributes: str = option("shape,color,material,size", "comma-separated attributes an edit may change")
        balance: str = option("value", "how the edit is drawn: 'value' (uniform over every (object, attribute, "
                              "value) change: 64% colour) or 'attribute' (each attribute equally often)")
        per_anchor: int = option(1, "edits per anchor (independent draws; the group's reduction picks among them)")

    def __init__(self, options: Any = None, *, seed: int = 0, task: Any = None) -> None:
        super().__init__(options, seed=seed, task=task)
        wanted = [a.strip() for a in self.options.attributes.split(",") if a.strip()]
        unknown = [a for a in wanted if a not in ATTRIBUTES]
        if unknown or not wanted:
            raise ConfigError([f"render-edit attributes: expected a comma-separated subset of "
                               f"{', '.join(ATTRIBUTES)}, got {self.options.attributes!r}"], "render-edit options")
        self.attributes = tuple(wanted)
        problems = []
        if self.options.balance not in ("value", "attribute"):
            problems.append(f"render-edit balance: expected 'value' or 'attribute', got {self.options.balance!r}")
        if self.options.per_anchor < 1:
            problems.append(f"render-edit per_anchor: expected an integer >= 1, got {self.options.per_anchor}")
        if problems:
            raise ConfigError(problems, "render-edit options")

    def mine(self, ctx: MiningContext) -> dict[int, Negatives]:
        from .render import SCENE_PROFILES, random_edit, render_scenes, scene_from_dicts, to_uint8

        data = self.task.train
        ids = ctx.batch.ids.long().cpu().tolist()
        # a numpy stream drawn from the generator's torch stream: checkpointed with it, so resume is exact
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=self.rng)))
        k = self.options.per_anchor
        edited, changed = [], []  # anchor-major: anchor i's edits are rows i*k .. i*k+k-1
        for i in ids:
            scene = scene_from_dicts(data.scenes[i])
            for _ in range(k):
                new, edit = random_edit(scene, rng, SCENE_PROFILES["cpu"], self.attributes, self.options.balance)
                edited.append(new)
                changed.append(ATTRIBUTES.index(edit.attribute))
        size = int(self.task.resources["meta"]["image_size"])
        images = torch.from_numpy(to_uint8(render_scenes(edited, resolution=size).images)).permute(0, 3, 1, 2)
        images = images.to(ctx.device)  # UInt8[B*k, 3, H, W]
        with torch.no_grad():
            b = len(ids)
            captions = ctx.embeddings[1]
            if k > 1:  # each caption once per edit of its anchor
                captions = captions[torch.arange(b, device=ctx.device).repeat_interleave(k)]
            score = ctx.model.score_pairs(ctx.model.encode(0, images), captions)
        return {0: Negatives.from_inputs(images.view(b, k, *images.shape[1:]), score.view(b, k), source=self.name,
                                         attribute=torch.tensor(changed).view(b, k))}
