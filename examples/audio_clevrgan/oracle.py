"""``render-edit``: the oracle upper bound of drawn negatives (paper §6.5).

For a rendered dataset the renderer knows every training scene, so the perfect "drawn" negative exists: the same
scene with exactly one attribute of one object changed, re-rendered. It is what GAN edits approximate (a GAN edit may
change nothing, several things, or leak outside the object); training with it bounds what edits can give.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np
import torch

from negmine import hookimpl
from negmine.errors import ConfigError
from negmine.generator import MiningContext, NegativeGenerator, Negatives, option

from .vocab import ATTRIBUTES, VALUES

_ANCHORS = ("all", "isolated", "sentences")
_BALANCES = ("value", "attribute", "confusion")


def _weighted_entries(text: str, default: float) -> list[tuple[str, str, float]]:
    """``'a:2, b'`` -> [(entry, name, weight)]: ``default`` where an entry has no weight, NaN where it is not a
    number (the caller reports it with the other bad entries)."""
    out = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, sep, weight = (p.strip() for p in entry.partition(":"))
        try:
            w = float(weight) if sep else default
        except ValueError:
            w = math.nan
        out.append((entry, name, w))
    return out


class _OneAttributeEdits(NegativeGenerator):
    """What both oracles share: the options of a one-attribute edit and the scoring of the edited images."""

    # each edit is tagged with the attribute it changed (meta["category"]), so the training telemetry reports each
    # attribute's edits apart (gan-scene-edit/side0/shape/active ...) and which one a hardest group trained on
    categories = ATTRIBUTES

    @attrs.frozen
    class Options:
        attributes: str = option("shape,color,material,size", "comma-separated attributes an edit may change, each "
                                 "optionally with a weight ('shape:4,color:1,material:1,size:1': shape edits 4x as "
                                 "often as each other; needs balance 'attribute' or 'confusion')")
        balance: str = option("value", "how the edit is drawn: 'value' (uniform over every (object, attribute, "
                              "value) change: 64% colour), 'attribute' (each attribute equally often, or in "
                              "proportion to its weight) or 'confusion' (in proportion to how often the model "
                              "still scores that attribute's edits within the margin of the positive)")
        confusion_decay: float = option(0.95, "balance 'confusion': the running rate's weight on the past, per step "
                                        "(0.95: about the last 20 steps)")
        confusion_floor: float = option(0.1, "balance 'confusion': added to each attribute's rate, so an attribute "
                                        "the model has learnt is still edited now and then (and seen to slip)")
        values: str = option("", "comma-separated 'value:weight' pairs weighting an edit by the value it changes "
                             "('cube:2': a cube becomes another shape twice as often as a sphere or a cylinder "
                             "does; unlisted values weigh 1). Why: a value named by fewer caption words (cube "
                             "is said 'cube' or 'block', cylinder only 'cylinder') gets fewer edits per word")
        per_anchor: int = option(1, "edits per anchor (independent draws; the group's reduction picks among them)")
        anchors: str = option("all", "whose edits count in the loss: 'all', 'isolated' (only anchors whose caption is "
                              "one isolated word, task option isolated_words) or 'sentences' (only the others); "
                              "every anchor is still edited")
        edit_fraction: float = option(1.0, "fraction of the batch's anchors whose edit counts each step, drawn "
                                      "anew each step (1: every anchor, the paper); every anchor is still edited, "
                                      "so the edits do not depend on it. Why: the GAN-edit generators edit a "
                                      "fraction of the anchors for speed, and an oracle row compared with them "
                                      "needs as many edit negatives a step", min=0.01, max=1.0)
        localize: str = option("none", "'word': compare each edit with its positive on the caption word it "
                               "falsifies only (task resource edit_word_spans, as the GAN-edit generators' option "
                               "of that name; the negatives' anchor_span; a one-word caption's word is the whole "
                               "anchor), an edit without one on the whole caption; 'word-only': the same, and an "
                               "edit without one is dropped; 'none': the whole caption",
                               choices=("none", "word", "word-only"))

    def __init__(self, options: Any = None, *, seed: int = 0, task: Any = None) -> None:
        super().__init__(options, seed=seed, task=task)
        problems = []
        self.attributes, self.weights = self._parse_attributes(problems)
        self.value_weights = self._parse_values(problems)
        if self.options.balance not in _BALANCES:
            problems.append(f"{self.name} balance: expected one of {', '.join(map(repr, _BALANCES))}, "
                            f"got {self.options.balance!r}")
        elif self.weights is not None and self.options.balance == "value":
            problems.append(f"{self.name} attributes: weights ({self.options.attributes!r}) need balance 'attribute' "
                            f"or 'confusion', got {self.options.balance!r}")
        if not 0 <= self.options.confusion_decay < 1:
            problems.append(f"{self.name} confusion_decay: expected a number in [0, 1), got "
                            f"{self.options.confusion_decay}")
        if not self.options.confusion_floor > 0:
            problems.append(f"{self.name} confusion_floor: expected a number > 0, got {self.options.confusion_floor}")
        if self.options.per_anchor < 1:
            problems.append(f"{self.name} per_anchor: expected an integer >= 1, got {self.options.per_anchor}")
        if self.options.anchors not in _ANCHORS:
            problems.append(f"{self.name} anchors: expected one of {', '.join(map(repr, _ANCHORS))}, "
                            f"got {self.options.anchors!r}")
        if problems:
            raise ConfigError(problems, f"{self.name} options")
        # balance 'confusion': per attribute (ATTRIBUTES order), the running fraction of its edits the model scored
        # within the margin of the positive; 1 at the start (every attribute drawn alike until the model shows
        # which it has learnt). Float64 on the CPU, in the checkpoint (state_dict) so that resume is exact.
        self.confusion = torch.ones(len(ATTRIBUTES), dtype=torch.float64)
        self.localized: float | None = None  # option localize: the share of this step's edits given a word
        self._step_rng: np.random.Generator | None = None  # this step's numpy stream (_edit_rng)

    def _parse_attributes(self, problems: list[str]) -> tuple[tuple[str, ...], tuple[float, ...] | None]:
        """Option ``attributes`` as (names, weights or None when no entry has one); appends to ``problems``."""
        names, weights, bad = [], [], []
        for entry, name, w in _weighted_entries(self.options.attributes, default=1.0):
            if name not in ATTRIBUTES or name in names or not (math.isfinite(w) and w > 0):
                bad.append(entry)
            names.append(name)
            weights.append(w)
        if bad or not names:
            problems.append(f"{self.name} attributes: expected distinct names from {', '.join(ATTRIBUTES)}, each "
                            f"optionally ':weight' with a positive weight; got {self.options.attributes!r}"
                            + (f" (bad: {', '.join(map(repr, bad))})" if bad else ""))
        return tuple(names), (tuple(weights) if ":" in self.options.attributes else None)

    def _parse_values(self, problems: list[str]) -> dict[str, float] | None:
        """Option ``values`` as {value: weight} (None when empty); appends to ``problems``. Each value must belong
        to one of the allowed attributes: a weight on a value no edit may change would silently do nothing."""
        allowed = {v for a in self.attributes if a in VALUES for v in VALUES[a]}
        out, bad = {}, []
        for entry, name, w in _weighted_entries(self.options.values, default=math.nan):
            if name not in allowed or name in out or not (math.isfinite(w) and w > 0):
                bad.append(entry)
            out[name] = w
        if bad:
            problems.append(f"{self.name} values: expected distinct 'value:weight' pairs with a positive weight and a "
                            f"value of the allowed attributes ({', '.join(sorted(allowed))}); got "
                            f"{self.options.values!r} (bad: {', '.join(map(repr, bad))})")
        return out or None

    def _edit(self, scene: Any, rng: np.random.Generator, cfg: Any, word: tuple[str, str, str] | None) -> tuple[Any, int]:
        """(edited scene, index of the changed attribute) for one anchor. An anchor whose caption is one isolated
        word (task option ``isolated_words``) gets the scene with that word's value removed from every object
        (:func:`audio_clevrgan.render.remove_value`): a one-attribute edit of a random object would mostly leave
        the value in the scene, a false negative of the word. Else one attribute of one object changes.

        A scene with no valid edit of the allowed attributes (with ``attributes = "shape"``, say, every shape
        change would hide a neighbour) gives the scene itself and index -1: a placeholder that
        :meth:`_negatives` marks invalid, so that anchor has no edit this step and training goes on."""
        from .render import NoValidEdit, random_edit, remove_value

        if word is not None and any(getattr(o, word[0]) == word[1] for o in scene):
            return remove_value(scene, rng, word[0], word[1], cfg), ATTRIBUTES.index(word[0])
        try:
            if self.options.balance == "confusion":
                new, edit = random_edit(scene, rng, cfg, self.attributes, "attribute", self.draw_weights(),
                                        self.value_weights)
            else:
                new, edit = random_edit(scene, rng, cfg, self.attributes, self.options.balance, self.weights,
                                        self.value_weights)
        except NoValidEdit:
            return scene, -1
        return new, ATTRIBUTES.index(edit.attribute)

    def draw_weights(self) -> tuple[float, ...]:
        """Balance 'confusion': each allowed attribute's draw weight, (its running confusion + the floor) times its
        weight in option ``attributes`` (1 without one)."""
        prior = self.weights or (1.0,) * len(self.attributes)
        return tuple(w * (float(self.confusion[ATTRIBUTES.index(a)]) + self.options.confusion_floor)
                     for a, w in zip(self.attributes, prior, strict=True))

    def observe(self, changed: torch.Tensor, score: torch.Tensor, positive: torch.Tensor, margin: float,
                edited: torch.Tensor) -> None:
        """Update the running confusion from one step's edits: ``changed`` Long[B, K] each edit's attribute (index
        into ATTRIBUTES, -1 none), ``score`` Float[B, K] its score against its anchor's caption, ``positive``
        Float[B] the anchor's own score, ``edited`` Bool[B] the anchors whose edits count toward the rates (those
        with a sentence caption: a one-word anchor's edit removes its word instead, :meth:`_edit`). An attribute
        with no edit this step keeps its rate."""
        within = (score > positive[:, None] - margin).cpu()
        changed = changed.cpu()
        keep = edited.cpu()[:, None].expand_as(changed)
        decay = self.options.confusion_decay
        for a in range(len(ATTRIBUTES)):
            mask = keep & (changed == a)
            if bool(mask.any()):
                rate = within[mask].double().mean()
                self.confusion[a] = decay * self.confusion[a] + (1 - decay) * rate

    @hookimpl
    def negmine_step_end(self, trainer: Any, step: int, metrics: dict) -> None:
        """Balance 'confusion': log each allowed attribute's running rate and its share of the draws; option
        localize: the share of the step's edits compared on a word (``NAME/localized``)."""
        if self.localized is not None:
            metrics[f"{self.name}/localized"] = self.localized
        if self.options.balance != "confusion":
            return
        weights = self.draw_weights()
        for a, w in zip(self.attributes, weights, strict=True):
            metrics[f"{self.name}/confusion/{a}"] = float(self.confusion[ATTRIBUTES.index(a)])
            metrics[f"{self.name}/draw_share/{a}"] = w / sum(weights)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "confusion": self.confusion.clone()}

    def load_state_dict(self, state: Any) -> None:
        super().load_state_dict(state)
        if "confusion" in state:  # checkpoints written before balance 'confusion' existed have none
            self.confusion = state["confusion"].to(torch.float64).clone()

    def _words(self, ids: torch.Tensor) -> list[tuple[str, str, str] | None]:
        isolated = getattr(self.task.train, "isolated", None)
        return [None] * len(ids) if isolated is None else [isolated[i] for i in ids.long().cpu().tolist()]

    def _edit_rng(self) -> np.random.Generator:
        # a numpy stream drawn from the generator's torch stream: checkpointed with it, so resume is exact. The step's
        # stream is kept for _valid's edit_fraction draw, made after the edits so that it changes none of them
        self._step_rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=self.rng)))
        return self._step_rng

    def _valid(self, words: list[tuple[str, str, str] | None], device: Any) -> torch.Tensor | None:
        """Bool[B]: the anchors whose edits count (options ``anchors`` and ``edit_fraction``); None when all do.
        Every anchor is still edited, so the edits do not depend on them: the share of ``edit_fraction`` is drawn
        from the step's own numpy stream (:meth:`_edit_rng`) after its edits, which leaves the generator's stream,
        and with it the later steps' edits, as they are."""
        valid = None
        if self.options.anchors != "all":
            isolated = torch.tensor([w is not None for w in words], dtype=torch.bool, device=device)
            valid = isolated if self.options.anchors == "isolated" else ~isolated
        fraction = self.options.edit_fraction
        if fraction < 1.0:
            b = len(words)
            chosen = torch.zeros(b, dtype=torch.bool)
            chosen[torch.from_numpy(self._step_rng.permutation(b)[:max(1, round(fraction * b))])] = True
            chosen = chosen.to(device)
            valid = chosen if valid is None else valid & chosen
        return valid

    def _negatives(self, ctx: MiningContext, images: torch.Tensor, changed: list[int],
                   words: list[tuple[str, str, str] | None]) -> dict[int, Negatives]:
        """``images`` (B*k, 3, H, W), anchor-major (anchor i's edits are rows i*k .. i*k+k-1), scored against their
        anchor's caption; ``words`` (B) each anchor's isolated word or None (:meth:`_words`)."""
        k = self.options.per_anchor
        b = images.shape[0] // k
        anchor_valid = self._valid(words, ctx.device)
        valid = None if anchor_valid is None else anchor_valid[:, None].expand(b, k)
        changed_at = torch.tensor(changed).view(b, k)  # Long[B, K] index into ATTRIBUTES, -1: no valid edit (_edit)
        edited = changed_at.to(ctx.device) >= 0
        if not bool(edited.all()):
            valid = edited if valid is None else valid & edited
        with torch.no_grad():
            captions = ctx.embeddings[1]
            if k > 1:  # each caption once per edit of its anchor
                captions = captions[torch.arange(b, device=ctx.device).repeat_interleave(k)]
            score = ctx.model.score_pairs(ctx.model.encode(0, images), captions)
        if self.options.balance == "confusion":
            self.observe(changed_at, score.view(b, k), ctx.positive_scores, ctx.margin,
                         torch.tensor([w is None for w in words], dtype=torch.bool))
        meta = {}
        if self.options.localize != "none":
            meta["anchor_span"], found = self._word_spans(ctx, images, b, k)
            self.localized = float(found[edited].float().mean()) if bool(edited.any()) else 0.0
            if self.options.localize == "word-only":
                valid = found if valid is None else valid & found
        return {0: Negatives.from_inputs(images.view(b, k, *images.shape[1:]), score.view(b, k), valid,
                                         source=self.name, category=changed_at, **meta)}

    def _word_spans(self, ctx: MiningContext, images: torch.Tensor, b: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Option localize: (anchor_span Float[B, K, 2], found Bool[B, K]) for ``images`` (B*k, 3, H, W),
        anchor-major: per edit the task's span of the caption word it falsifies (``resources["edit_word_spans"]``,
        which reads the edit with the segmenter, as for the GAN's own edits), the whole anchor (0, 1) where it
        names none. No random draw: the edits do not depend on the option."""
        read = (getattr(self.task, "resources", None) or {}).get("edit_word_spans")
        if not callable(read):
            raise ConfigError([f"localize = {self.options.localize!r} needs the task resource 'edit_word_spans' "
                               f"(ids, images -> Float[M, 2]), which this task does not provide; set localize = "
                               f"'none'"], f"{self.name} options")
        ids = ctx.batch.ids.long().cpu().repeat_interleave(k)
        with torch.no_grad():
            spans = torch.as_tensor(read(ids, images.detach()), dtype=torch.float32).cpu()
        if spans.shape != (b * k, 2):
            raise ConfigError([f"task resource edit_word_spans returned shape {tuple(spans.shape)}, expected "
                               f"({b * k}, 2)"], f"{self.name} options")
        found = ~spans.isnan().any(1)
        spans[~found] = torch.tensor([0.0, 1.0])
        return spans.view(b, k, 2).to(ctx.device), found.view(b, k).to(ctx.device)


class RenderedEdits(_OneAttributeEdits):
    """Each anchor's scene re-rendered with one attribute of one object changed (side a, UInt8 images)."""

    name = "render-edit"
    requires = frozenset({"scenes"})

    def mine(self, ctx: MiningContext) -> dict[int, Negatives]:
        from .render import SCENE_PROFILES, render_scenes, scene_from_dicts, to_uint8

        data = self.task.train
        rng = self._edit_rng()
        edited, changed, words = [], [], self._words(ctx.batch.ids)
        for i, word in zip(ctx.batch.ids.long().cpu().tolist(), words, strict=True):
            scene = scene_from_dicts(data.scenes[i])
            for _ in range(self.options.per_anchor):
                new, attribute = self._edit(scene, rng, SCENE_PROFILES["cpu"], word)
                edited.append(new)
                changed.append(attribute)
        size = int(self.task.resources["meta"]["image_size"])
        images = torch.from_numpy(to_uint8(render_scenes(edited, resolution=size).images)).permute(0, 3, 1, 2)
        return self._negatives(ctx, images.to(ctx.device), changed, words)  # UInt8[B*k, 3, H, W]


class GanSceneEdits(_OneAttributeEdits):
    """``gan-scene-edit``: the oracle of a scene-coded GAN. Each anchor's latent names a scene
    (:meth:`audio_clevrgan.scene_gan.SceneCodedGenerator.scenes`); exactly one attribute of one object of it is
    changed and the GAN itself draws the edited scene (side a, Float[B, 1, 3, R, R] in [0, 1]).

    The negative is drawn in the positive's own style (the GAN's, not the renderer's), so unlike ``render-edit`` on
    GAN data a model cannot tell it by how it is drawn, only by what changed. The positives are regenerated from
    their latents as floats at stage start (as the GAN-edit generators do), so quantisation cannot tell them apart
    either.
    """

    name = "gan-scene-edit"
    requires = frozenset({"gan", "latents"})

    def __init__(self, options: Any = None, *, seed: int = 0, task: Any = None) -> None:
        super().__init__(options, seed=seed, task=task)
        self._gan = None

    def gan(self) -> Any:
        from negmine_gan.edit import resolve_gan

        if self._gan is None:
            gan = resolve_gan(self.task)
            if not callable(getattr(gan, "scenes", None)):
                raise ConfigError([f"gan-scene-edit needs a scene-coded GAN (one with .scenes(z)), the task's is "
                                   f"{type(gan).__name__}"], "gan-scene-edit")
            self._gan = gan
        return self._gan

    @hookimpl
    def negmine_stage_start(self, trainer: Any, stage: Any) -> None:
        data = trainer.task.train
        if hasattr(data, "use_generated_positives"):
            device = trainer.device
            data.use_generated_positives(lambda z: self.draw(z.to(device)))

    def draw(self, z: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        """Float[B, 3, R, R] in [0, 1]: the GAN's images of latents z (B, Z), or of scene codes (B, K, 11)."""
        gan = self.gan()
        if next(gan.parameters()).device != z.device:
            gan.to(z.device)
        with torch.no_grad():
            images = gan(z) if codes is None else gan(codes=codes.to(z.device))
        return (images.clamp(-1, 1) + 1) / 2

    def mine(self, ctx: MiningContext) -> dict[int, Negatives]:
        from .scene_gan import encode_scenes

        gan = self.gan()
        z = ctx.batch.extras["latent"].to(ctx.device)
        rng = self._edit_rng()
        edited, changed, words = [], [], self._words(ctx.batch.ids)
        for scene, word in zip(gan.scenes(z), words, strict=True):
            for _ in range(self.options.per_anchor):
                new, attribute = self._edit(scene, rng, gan.scene_config, word)
                edited.append(new)
                changed.append(attribute)
        images = self.draw(z, encode_scenes(edited, gan.scene_config.max_objects))  # Float[B*k, 3, R, R]
        return self._negatives(ctx, images, changed, words)
