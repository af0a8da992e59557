"""``gan-targeted``: ablate the GAN units that draw the concept the model sees at the salient spot (paper §5.6).

At stage start and every ``recluster_every`` steps the generator recomputes the model's concepts (unit clusters of its
embedding) and dissects the GAN layer against them (:mod:`negmine_gan.concepts`). For a pair, the image vector at the
matchmap peak, normalised, is scored against every cluster; the first try edits the top cluster, later tries draw a
cluster with probability proportional to its clipped score. The top ``units`` fraction of that cluster's IoU ranking is
ablated in the salient region; each rejected try ablates ``units_step`` more of the layer, lowers the region threshold
and the acceptance threshold (the paper's 140 and +40 units of 512, tau_h 0.95 - 0.1, tau_rho 0.95 - 0.05).

With ``concepts = "task"`` the concepts are named by the task instead (resource ``concept_maps``: a segmentation of
images into named concepts), as the paper's own editing (§4) and GAN Dissection dissect a generator with a segmenter:
the GAN units specific to each concept are found once per run; for a pair, each try draws its concept uniformly
among those drawn inside the model's salient region (``edit_concepts`` may restrict them) and ablates at most that
concept's specific units. The model still chooses where to edit; the task says what is there and which units draw it.

Ablation alone can only draw a value toward the one no unit draws (on Audio CLEVRGAN every shape edit turns a cube or
a cylinder into a sphere; spheres are never edited). With ``insert`` > 0 an edit swaps values instead (GAN
Dissection's insertion): at the salient spot the value drawn there (the most present concept of ``edit_concepts``,
or the default when none is) is replaced by another drawn uniformly among the others, the default included: the
source's specific units are ablated and the target's set to ``insert`` times their dissection threshold. With
``steer`` > 0 (and ``swap_cells = "value"``) swaps to the values of ``steer_to`` are drawn by steering instead: every
channel of the swapped cells moves by ``steer`` x (the target's mean feature - the source's), the means taken over
the dissection's cells that the task reads as each value (on Audio CLEVRGAN, insertion rarely draws a cylinder from
a cube, steering often does; it draws cubes less well: benchmarks/results/edit_steering.md).
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import Tensor

from negmine import hookimpl
from negmine.errors import PluginError, closest
from negmine.generator import MiningContext, Negatives, option
from negmine.model import running_stats_kept
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
    tries_stats,
    warm_start_option,
)
from negmine_gan.concepts import (
    Concepts,
    TaskConcepts,
    compute_concepts,
    compute_task_concepts,
    peak_datapoints,
)
from negmine_gan.edit import edit_until_changed, geodesic_region, upsample_mask
from negmine_gan.random_edit import salient

PAPER_CLUSTERS = 250 / 512  # the paper's clusters per embedding unit (all 512 of its units fire)


class GanTargetedEdits(GanEditGenerator):
    """Edited GAN images: the units of the concept the model sees at the salient spot, ablated there (§5.6)."""

    name = "gan-targeted"
    requires = frozenset({"gan", "latents", "dense_maps", "corpus"})

    @attrs.frozen
    class Options:
        layer: str = option("layer4", "GAN layer to edit (on the model's image grid)")
        concepts: str = option("model", "where the concepts come from: the model's embedding units, clustered (the "
                               "paper), or the task's segmentation of GAN samples (task resource concept_maps: "
                               "images -> names, Bool[B, K, S, S]; GAN Dissection's own dissection). Either way the "
                               "model's salient region says where to edit", choices=("model", "task"))
        min_specificity: float = option(0.05, "with concepts = task: a concept is kept when one of its units' IoU with "
                                        "it exceeds that unit's IoU with every other concept by this much (a value "
                                        "that no unit draws alone, e.g. a default, cannot be ablated)",
                                        min=0.0, max=1.0)
        edit_concepts: str = option("", "with concepts = task: the concepts an edit may target (comma-separated "
                                    "names, e.g. 'cube,cylinder'; '' = every concept kept)")
        clusters: float = option(None, "number of concept clusters as a fraction of the embedding width D; unset: "
                                 "250/512 of the units that fire at the matchmap peaks (the paper's 250 clusters of "
                                 "512 units, scaled to a narrower or sparser model)", min=0.0, max=1.0, type=float)
        units: float = option(140 / 512, "fraction of the layer's units ablated on the first try (paper 140/512)",
                              min=0.0, max=1.0)
        units_step: float = option(40 / 512, "fraction added after each rejected try (paper 40/512)", min=0.0,
                                   max=1.0)
        region_threshold: float = option(0.95, "initial tau_h of the salient region", min=0.0, max=1.0)
        region_step: float = option(0.1, "tau_h decrease after each rejected try", min=0.0, max=1.0)
        accept: float = option(0.95, "initial change ratio needed to accept an edit", min=0.0)
        accept_step: float = option(0.05, "acceptance decrease after each rejected try", min=0.0)
        insert: float = option(0.0, "with concepts = task: swap values instead of only ablating them: the value "
                               "drawn at the spot (the most present concept of edit_concepts, else the default "
                               "that no unit draws, e.g. sphere) becomes another drawn uniformly among the others and "
                               "the default: its units are ablated and the target's specific units set to this "
                               "multiple of their dissection threshold (GAN Dissection's insertion; 8-12 draws the "
                               "target about as often as ablation draws the default, benchmarks/edit_insertion.py). "
                               "0: ablation only", min=0.0)
        present: float = option(0.1, "with insert > 0: a concept counts as drawn at the spot when this share of its "
                                "specific units' (unit, cell) pairs in the region are on (Audio CLEVRGAN: 0.5-0.9 "
                                "on a shape's own cells, 0.0 on another shape's)", min=0.0, max=1.0)
        swap_cells: str = option("region", "with insert > 0: where a swap edits: every cell of the salient region "
                                 "(an inserted value may then draw a new object on the background), or only the "
                                 "region's cells the task reads as the value being replaced (concept_maps of the "
                                 "original; the default's cells by the name default_concept); a region holding "
                                 "none of them has nothing to swap, and its edit is dropped",
                                 choices=("region", "value"))
        default_concept: str = option("", "with swap_cells = value: the task's name of the value that no unit draws "
                                      "(e.g. 'sphere'), the source of a swap where no concept of edit_concepts is "
                                      "drawn")
        steer: float = option(0.0, "with swap_cells = value: draw the swaps to the values of steer_to by steering "
                              "instead of insertion: every channel of the swapped cells moves by this multiple of "
                              "(the target's mean feature - the source's), means over the dissection's cells that "
                              "the task reads as each value (Audio CLEVRGAN: 2 turns a cube into a cylinder as the "
                              "only change in 9x as many images as insertion, into a cube in fewer; "
                              "benchmarks/edit_steering.py). 0: insertion only", min=0.0)
        steer_to: str = option("", "with steer > 0: the target values drawn by steering (comma-separated task names, "
                               "default_concept allowed, e.g. 'cylinder,sphere'); the others are inserted; '' = "
                               "every target")
        retarget: bool = option(True, "with insert > 0: a rejected swap try draws another target (false: every try "
                                "keeps the first draw, so the targets stay uniform, as the oracle's; with retries "
                                "the accepted targets drift toward those that change the most pixels, e.g. steered "
                                "spheres: benchmarks/results/edit_steering.md)")
        matched_positive: bool = option(False, "with insert > 0: compare each swap with a look-matched positive "
                                        "instead of the original: the same cells with the source value's units "
                                        "ablated and set to insert x their threshold again (the source redrawn "
                                        "as itself, the way the swap drew its target), kept where the task still "
                                        "reads the anchor's caption as true of it (else the original). A look "
                                        "that every drawn swap shares then cannot meet the margin, and the loss "
                                        "raises the matched positive's score (benchmarks/results/"
                                        "swap_redraws.md: the swaps' look). Swaps from the default value (no "
                                        "units) and steered swaps keep the original. Not with localize or "
                                        "centre_on_others")
        matched_insert: float = option(0.0, "with matched_positive: the source value's units on a matched positive are "
                                       "set to this multiple of their threshold instead of insert, a gentler redraw "
                                       "(Audio CLEVRGAN: at 2 it keeps the swaps' look with a third of the 8x "
                                       "redraw's pixel change, and DaveNet reads it as its caption's image far more "
                                       "often; benchmarks/results/matched_positives.md). 0: insert", min=0.0)
        max_tries: int = option(20, "tries before an edit is accepted whatever its change ratio", min=1)
        warm_start: float = warm_start_option()
        edit_fraction: float = edit_fraction_option()
        drop_still_true: bool = drop_still_true_option()
        keep_changes: str = keep_changes_option()
        keep_changes_mode: str = keep_changes_mode_option()
        localize: str = localize_option()
        centre_on_others: bool = centre_on_others_option()
        score_clip: float = option(4.0, "cluster draw probability is proportional to clip(score, 0, score_clip)",
                                   min=0.0)
        recluster_every: int = option(1000, "recompute concepts and dissection every N steps (0: stage start only)",
                                      min=0)
        max_datapoints: int = option(10000, "training pairs used to find concepts", min=10)
        dissect_samples: int = option(1000, "GAN samples used to rank units per concept", min=10)
        unit_quantile: float = option(0.95, "a GAN unit is 'on' above this quantile of its activations (with "
                                      "unit_threshold = quantile)", min=0.0, max=1.0)
        unit_threshold: str = option("quantile", "how a GAN unit's 'on' threshold is set for the dissection: one "
                                     "quantile for every unit (unit_quantile), or per unit by GAN Dissection's "
                                     "IQR rule (its default for generators)", choices=("quantile", "iqr"))

        def __attrs_post_init__(self) -> None:
            """Cross-option checks; a ValueError here is reported by the config validation, before training."""
            check_keep_changes(self)
            check_centring(self)
            if self.matched_positive and (self.localize != "none" or self.centre_on_others):
                raise ValueError("matched_positive replaces how a swap is compared with its positive, as localize "
                                 "and centre_on_others do; set only one of them")

    def __init__(self, options: Any = None, *, seed: int = 0, task: Any = None) -> None:
        super().__init__(options, seed=seed, task=task)
        o = self.options
        if o.insert > 0 and o.concepts != "task":
            raise PluginError(f"generator {self.name!r}: insert = {o.insert:g} needs concepts = 'task' (a "
                              "value's units and their levels come from the task's dissection); set insert = 0 or "
                              "concepts = 'task'")
        if o.swap_cells == "value" and not (o.insert > 0 and str(o.default_concept).strip()):
            raise PluginError(f"generator {self.name!r}: swap_cells = 'value' needs insert > 0 and default_concept "
                              "(the task's name of the value no unit draws, e.g. 'sphere')")
        if o.steer > 0 and o.swap_cells != "value":
            raise PluginError(f"generator {self.name!r}: steer = {o.steer:g} needs swap_cells = 'value' (a steering "
                              "edit moves the cells of the value being replaced by the two values' mean difference; "
                              "on other cells it would draw that difference onto whatever is there)")
        if str(o.steer_to).strip() and not o.steer > 0:
            raise PluginError(f"generator {self.name!r}: steer_to = {o.steer_to!r} needs steer > 0 (how far a "
                              "steering edit moves); set steer, e.g. 2, or leave steer_to empty")
        if o.matched_positive and not o.insert > 0:
            raise PluginError(f"generator {self.name!r}: matched_positive needs insert > 0 (a matched positive "
                              "redraws a swap's source value the way the swap drew its target); set insert, e.g. 8, "
                              "or matched_positive = false")
        if o.matched_insert > 0 and not o.matched_positive:
            raise PluginError(f"generator {self.name!r}: matched_insert = {o.matched_insert:g} needs matched_positive = "
                              "true (it sets how a matched positive redraws its source); set matched_positive, or "
                              "leave matched_insert at 0")
        if not o.retarget and not o.insert > 0:
            raise PluginError(f"generator {self.name!r}: retarget = false needs insert > 0 (only a swap has a target "
                              "to keep); set insert, or leave retarget at true")
        self.concepts: Concepts | None = None
        self.task_concepts: TaskConcepts | None = None
        self._few_warned = False

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def refresh(self, model: Any, data: Any, device: torch.device, step: int) -> None:
        o = self.options
        probe = data.batch(torch.arange(1))
        with torch.no_grad(), running_stats_kept(model):  # a one-image probe must not move BatchNorm's statistics
            image = model.encode(0, probe.a.to(device))
        dim = int(image.values.shape[1])
        z = probe.extras["latent"].to(device)
        self.check_grid(self._editor().features(z), image, z)
        if o.concepts == "task":
            # the task's concepts and the GAN do not change while the model trains; concepts restored from a checkpoint
            # written before the mean features were kept are dissected again (the same samples: the same units)
            if self.task_concepts is None or (o.steer > 0 and self.task_concepts.means is None):
                self.task_concepts = self._dissect_task_concepts(device, int(z.shape[1]))
            return
        self.concepts = compute_concepts(
            model, data, self._editor(), self.to_input,
            n_clusters=None if o.clusters is None else max(2, round(o.clusters * dim)),
            active_fraction=PAPER_CLUSTERS if o.clusters is None else None,
            max_datapoints=o.max_datapoints, n_dissect=o.dissect_samples,
            unit_quantile=None if o.unit_threshold == "iqr" else o.unit_quantile,
            seed=self.seed, device=device, step=step, latents=(self.task.resources or {}).get("sample_latents"))
        self._few_warned = False

    def _dissect_task_concepts(self, device: torch.device, z_dim: int) -> TaskConcepts:
        o = self.options
        resources = getattr(self.task, "resources", None) or {}
        maps = resources.get("concept_maps")
        if not callable(maps):
            raise PluginError(f"generator {self.name!r}: concepts = 'task' needs the task resource 'concept_maps' "
                              "(images -> concept names, Bool[B, K, S, S]), which task "
                              f"{getattr(self.task, 'name', '?')!r} does not provide; set concepts = 'model'")
        found = compute_task_concepts(
            self._editor(), self.to_input, maps, n_dissect=o.dissect_samples, seed=self.seed, device=device,
            z_dim=z_dim, latents=resources.get("sample_latents"), min_specificity=o.min_specificity,
            quantile=None if o.unit_threshold == "iqr" else o.unit_quantile)
        if not found.names:
            raise PluginError(f"generator {self.name!r}: no concept of task {getattr(self.task, 'name', '?')!r} has a "
                              f"unit of its own in GAN layer {o.layer!r} (best specificity below min_specificity = "
                              f"{o.min_specificity}; concepts: {', '.join(found.dropped)}): lower min_specificity "
                              "or edit another layer")
        self.allowed_concepts(found)  # an unknown or undrawable edit_concepts name stops the run at stage start
        if o.steer > 0:
            self.steered_values(found)
        return found

    def steered_values(self, concepts: TaskConcepts) -> set[str]:
        """The target values drawn by steering (``options.steer_to``, every value when empty). A name the task does
        not read is refused with the closest; so is a value a swap can reach (``edit_concepts`` and the default)
        whose mean feature the dissection could not take (no cell held it)."""
        o = self.options
        known = list(concepts.mean_names)
        wanted = [w.strip() for w in str(o.steer_to).split(",") if w.strip()]
        problems = []
        for name in wanted:
            if name not in known:
                hint = closest(name, known)
                problems.append(f"{name!r} is not a concept of the task" + (f" (did you mean {hint!r}?)" if hint else ""))
        if problems:
            raise PluginError(f"generator {self.name!r}: steer_to: {'; '.join(problems)}; the task's concepts: "
                              f"{', '.join(known)}")
        allowed = self.allowed_concepts(concepts)
        reachable = [n for n, ok in zip(concepts.names, allowed.tolist(), strict=True) if ok]
        reachable.append(str(o.default_concept).strip())
        # (a default_concept the task does not name is refused where the swap's cells are read, naming the closest)
        unseen = [n for n in reachable if n in known and not bool(concepts.means[known.index(n)].isfinite().all())]
        if unseen:
            raise PluginError(f"generator {self.name!r}: steer: no mean feature for {', '.join(unseen)} "
                              f"(no cell of the {self.options.dissect_samples} dissection samples holds it); raise "
                              "dissect_samples or set steer = 0")
        return set(wanted) if wanted else set(known)

    def allowed_concepts(self, concepts: TaskConcepts) -> Tensor:
        """Bool[K]: the task concepts an edit may target (``options.edit_concepts``; all when empty). A name the task
        does not know is refused with the closest known one; a name it knows but no unit draws alone, saying so.
        Recomputed per call (a few names): no state to keep in step with a resumed run's concepts."""
        wanted = [w.strip() for w in str(self.options.edit_concepts or "").split(",") if w.strip()]
        if not wanted:
            return torch.ones(len(concepts.names), dtype=torch.bool)
        known = list(concepts.names) + list(concepts.dropped)
        problems = []
        for name in wanted:
            if name in concepts.dropped:
                problems.append(f"{name!r} has no unit of its own in GAN layer {self.options.layer!r}")
            elif name not in concepts.names:
                hint = closest(name, known)
                problems.append(f"{name!r} is not a concept of the task" + (f" (did you mean {hint!r}?)" if hint else ""))
        if problems:
            raise PluginError(f"generator {self.name!r}: edit_concepts: {'; '.join(problems)}; the concepts that can "
                              f"be edited: {', '.join(concepts.names)}")
        return torch.tensor([n in wanted for n in concepts.names])

    def few_clusters(self) -> str | None:
        """A warning when the concepts kept at most two clusters (the edits are then barely targeted), else None."""
        c = self.concepts
        if self.options.concepts == "task" or c is None or c.centroids.shape[0] > 2:
            return None
        return (f"{self.name}: only {c.centroids.shape[0]} concept cluster(s) of more than 3 units remain (of "
                f"{c.requested} requested from the {c.active} embedding units that fire at the matchmap peaks, "
                f"D = {c.centroids.shape[1]}): the edits are barely targeted. Ask for fewer clusters "
                f"(clusters, a fraction of D; unset: {PAPER_CLUSTERS:.3f} of the units that fire), or train the "
                "model longer first (more units fire)")

    def _warn_few(self, trainer: Any) -> None:
        message = self.few_clusters()
        if message and not self._few_warned:
            self._few_warned = True
            if trainer.dist.is_main:
                trainer.reporter.warn(message)

    @hookimpl
    def negmine_stage_start(self, trainer: Any, stage: Any) -> None:
        super().negmine_stage_start(trainer, stage)
        if self._no_concepts():  # a resumed stage keeps the concepts from its checkpoint
            self.refresh(trainer.model, trainer.task.train, trainer.device, trainer.global_step)
        self._warn_few(trainer)

    def _no_concepts(self) -> bool:
        if self.options.concepts == "task":  # concepts saved before the means were kept cannot steer
            return self.task_concepts is None or (self.options.steer > 0 and self.task_concepts.means is None)
        return self.concepts is None

    @hookimpl
    def negmine_step_end(self, trainer: Any, step: int, metrics: dict) -> None:
        super().negmine_step_end(trainer, step, metrics)
        every = self.options.recluster_every if self.options.concepts == "model" else 0
        if every and trainer.step_in_stage % every == 0 and trainer.step_in_stage < trainer.stage.steps:
            self.refresh(trainer.model, trainer.task.train, trainer.device, step)
            self._warn_few(trainer)

    # -- mining ------------------------------------------------------------------------------------------------

    def cluster_order(self, vectors: Tensor) -> tuple[Tensor, Tensor]:
        """Cluster scores of normalised image vectors Float[B, D]: (order Long[B, K] by descending score,
        draw probabilities Float[B, K] in that order)."""
        c = self.concepts
        normed = (vectors.cpu() - c.mu) / (c.sigma + 1e-8)
        scores = normed @ c.centroids.T  # [B, K]
        ordered, order = scores.sort(dim=1, descending=True)
        weights = ordered.clamp(0, self.options.score_clip)
        uniform = torch.full_like(weights, 1.0)
        weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, uniform)
        return order, weights / weights.sum(1, keepdim=True)

    def task_concept_order(self, feats: Tensor, region: Tensor, channels: int) -> tuple[Tensor, Tensor]:
        """With the task's concepts: (order Long[M, K] by descending presence in each edited image's salient region
        (features Float[M, C, h, w], region Bool[M, h, w]), draw probabilities Float[M, K] in that order: uniform
        over the concepts drawn there at least half as much as the most drawn one; uniform over all when none is;
        only the concepts of ``options.edit_concepts`` when it names some).

        Why uniform, not in proportion to presence: a value with more units, or one that nearly every object has
        (a colour other than the default), would take most edits; every concept drawn at the spot is as good a
        negative, and the words the model knows least are no likelier to be the most drawn."""
        units = max(1, round(self.options.units * channels))
        allowed = self.allowed_concepts(self.task_concepts)
        presence = self.task_concepts.presence(feats, region, units) * allowed
        ordered, order = presence.sort(dim=1, descending=True)
        present = (ordered >= 0.5 * ordered[:, :1]) & (ordered > 0)
        # nothing allowed is drawn there: every allowed concept as likely (the edit may then change nothing)
        weights = torch.where(present.any(1, keepdim=True), present.float(), allowed[order].float())
        return order, weights / weights.sum(1, keepdim=True)

    def swap_sources(self, feats: Tensor, region: Tensor, channels: int) -> tuple[Tensor, Tensor]:
        """With ``insert`` > 0: (source Long[M]: the allowed concept most drawn in each salient region (features
        Float[M, C, h, w], region Bool[M, h, w]) when its presence reaches ``options.present``, else -1 (the
        default value); alternatives Bool[M, K + 1]: the values an edit may draw there, column 0 the default, column
        k + 1 concept k: every allowed value but the source)."""
        units = max(1, round(self.options.units * channels))
        allowed = self.allowed_concepts(self.task_concepts)
        presence = self.task_concepts.presence(feats, region, units) * allowed  # [M, K]
        best, index = presence.max(dim=1)
        source = torch.where(best >= self.options.present, index, torch.full_like(index, -1))
        alternatives = torch.cat([torch.ones(len(source), 1, dtype=torch.bool),
                                  allowed[None].expand(len(source), -1)], dim=1)
        alternatives[torch.arange(len(source)), source + 1] = False
        return source, alternatives

    def value_cells(self, images: Tensor, source: Tensor, grid: tuple[int, int]) -> Tensor:
        """Bool[M, h, w]: the cells of each image (model inputs [M, ...]) that the task's ``concept_maps`` read as
        its source value (``source`` Long[M]: a task concept, or -1 for ``options.default_concept``); a cell holds a
        value when a quarter of its pixels do (an object's edge cells count, so an insertion can redraw all of it)."""
        names, maps = self.task.resources["concept_maps"](images)
        names = [str(n) for n in names]
        default = str(self.options.default_concept).strip()
        if default not in names:
            hint = closest(default, names)
            raise PluginError(f"generator {self.name!r}: default_concept {default!r} is not a concept of the task"
                              + (f" (did you mean {hint!r}?)" if hint else "") + f"; its concepts: {', '.join(names)}")
        index = torch.tensor([names.index(self.task_concepts.names[k]) if k >= 0 else names.index(default)
                              for k in source.tolist()], dtype=torch.long)
        chosen = torch.as_tensor(maps)[torch.arange(len(index)), index].float().cpu()  # [M, S, S]
        return torch.nn.functional.adaptive_avg_pool2d(chosen[:, None], grid)[:, 0] >= 0.25

    def swap_units(self, source: Tensor, target: Tensor, count: int, channels: int) -> tuple[Tensor, Tensor]:
        """(units Bool[P, C], levels Float[P, C]) of a swap edit: the source concepts' first ``count`` specific
        units ablated (level 0), the targets' set to ``insert`` x their dissection threshold; -1 (the default) has
        no units."""
        c = self.task_concepts
        ablated = c.top_units(source.clamp_min(0), count, channels) & (source >= 0)[:, None]
        inserted = c.top_units(target.clamp_min(0), count, channels) & (target >= 0)[:, None]
        levels = inserted.float() * (self.options.insert * c.thresholds.float().clamp_min(0))[None]
        return ablated | inserted, levels

    def mine(self, ctx: MiningContext) -> dict[int, Negatives]:
        o = self.options
        if self._no_concepts():  # used without a trainer's hooks (tests, scripts)
            self.refresh(ctx.model, self.task.train, ctx.device, ctx.step)
        editor = self._editor()
        z_all = ctx.batch.extras["latent"].to(ctx.device)
        b = z_all.shape[0]
        feats_all, original = self.originals(ctx, z_all)
        channels = feats_all.shape[1]
        heat, seeds = salient(ctx.model, ctx.embeddings[0], ctx.embeddings[1])
        self.check_grid(feats_all, ctx.embeddings[0], z_all)
        items = self.edit_items(b)  # the anchors edited this step
        dev_items = items.to(ctx.device)
        z, feats, edit_original = z_all[dev_items], feats_all[dev_items], original[dev_items]
        m = items.shape[0]
        heat, seeds = heat[dev_items].cpu(), seeds[dev_items].cpu()
        first_region = geodesic_region(heat, seeds, torch.full((m,), o.region_threshold))
        swap = o.concepts == "task" and o.insert > 0
        if o.concepts == "task":
            if not swap:  # a swap reads the value at the spot itself (swap_sources)
                order, probs = self.task_concept_order(feats, first_region, channels)
            ranking = self.task_concepts.ranking  # [K, C]
        else:
            _, vectors, _ = peak_datapoints(ctx.model, ctx.embeddings[0], ctx.embeddings[1])
            order, probs = self.cluster_order(vectors[dev_items])
            ranking = self.concepts.ranking  # [K, C]
        pixels = upsample_mask(first_region, original.shape[-1]).to(original.device)
        if swap:  # the value at the spot, and a target value per item drawn uniformly among the others
            source, alternatives = self.swap_sources(feats, first_region, channels)
            target = torch.multinomial(alternatives.float(), 1, generator=self.rng)[:, 0] - 1
            chosen = source
            cells = (self.value_cells(self.to_input(edit_original), source, tuple(feats.shape[-2:]))
                     if o.swap_cells == "value" else None)
            steer_to = self.steered_values(self.task_concepts) if o.steer > 0 else set()
            default = str(o.default_concept).strip()

            def value_names(index: Tensor) -> list[str]:
                return [self.task_concepts.names[k] if k >= 0 else default for k in index.tolist()]

            def is_steered(index: Tensor) -> Tensor:  # Bool[P]: the targets drawn by steering
                return torch.tensor([n in steer_to for n in value_names(index)], dtype=torch.bool)
        elif o.concepts == "task":  # a concept per item, drawn among those drawn at the spot (first try too)
            chosen = order.gather(1, torch.multinomial(probs, 1, generator=self.rng))[:, 0]
        else:
            chosen = order[:, 0].clone()  # cluster per item (first try: the top cluster)
        start = self.escalation_start()

        def choose(pending: Tensor, attempt: int) -> tuple[Tensor, ...]:
            count = min(channels, round((o.units + attempt * o.units_step) * channels))
            tau = torch.full((pending.shape[0],), max(0.0, o.region_threshold - attempt * o.region_step))
            region = geodesic_region(heat[pending], seeds[pending], tau)
            if swap:  # a rejected try: another target (unless retarget is off), more units, a wider region
                if attempt > start and o.retarget:
                    draws = torch.multinomial(alternatives[pending].float(), 1, generator=self.rng)[:, 0]
                    target[pending] = draws - 1
                units, levels = self.swap_units(source[pending], target[pending], count, channels)
                if cells is not None:  # only where the value being replaced is drawn (none there: dropped below)
                    on_value = region & cells[pending]
                    region = torch.where(on_value.flatten(1).any(1)[:, None, None], on_value, region)
                if not steer_to:
                    return units, region, levels
                # a steered swap moves every channel of the cells and sets no unit
                steered = is_steered(target[pending])
                units[steered], levels[steered] = False, 0.0
                move = torch.zeros(pending.shape[0], channels)
                if bool(steered.any()):
                    move[steered] = o.steer * self.task_concepts.steering(
                        value_names(source[pending][steered]), value_names(target[pending][steered])).float()
                return units, region, levels, move
            if attempt > start:  # a rejected try: another cluster drawn by score, more units, a wider region
                draws = torch.multinomial(probs[pending], 1, generator=self.rng)[:, 0]
                chosen[pending] = order[pending, draws]
            if o.concepts == "task":  # never more than the units specific to the concept
                units = self.task_concepts.top_units(chosen[pending], count, channels)
            else:
                top = ranking[chosen[pending], :count]  # [P, count]
                units = torch.zeros(pending.shape[0], channels, dtype=torch.bool)
                units.scatter_(1, top, True)
            return units, region

        result = edit_until_changed(editor, z, feats, edit_original, pixels, choose, self.to_input, o.accept,
                                    o.accept_step, o.max_tries, start=start)
        tries = result["tries"]
        self.update_start(tries)
        inputs = self.to_input(original).clone()
        inputs[dev_items] = self.to_input(result["edited"])
        with torch.no_grad():
            score = ctx.model.score_pairs(ctx.model.encode(0, inputs[dev_items]), ctx.embeddings[1][dev_items])
        self.last_stats = {**tries_stats(tries, result["accepted"]), "change_ratio": float(result["change_ratio"].mean()),
                           "units_ablated": float((result["units"] & (result["levels"] == 0)).float().sum(1).mean()),
                           "clusters": float(len(ranking)), "start_level": float(start)}
        inserted = torch.full((m,), -1, dtype=torch.long)
        if swap:  # which way the edits went: from the default, to the default, between two drawn values
            inserted = target.clone()
            self.last_stats.update({"units_inserted": float((result["levels"] > 0).float().sum(1).mean()),
                                    "from_default": float((source < 0).float().mean()),
                                    "to_default": float((target < 0).float().mean())})
            if o.steer > 0:
                self.last_stats["steered"] = float(result["shift"].abs().sum(1).gt(0).float().mean())
        reached = torch.ones(m, dtype=torch.bool)
        if swap and cells is not None:  # a region holding none of the value's cells has nothing to swap: dropped
            reached = (result["region"] & cells).flatten(1).any(1)
            self.last_stats["off_value"] = float((~reached).float().mean())
        full = self.scatter_items
        kept = self.kept_edits(ctx, items, inputs[dev_items]) & reached
        matched = (self.matched_positives(ctx, items, z, feats, edit_original, result, b)
                   if swap and o.matched_positive else {})
        spans, kept = self.anchor_spans(ctx, items, inputs[dev_items], kept, b)
        valid = full(items, kept[:, None], b, False)
        return {0: Negatives.from_inputs(inputs[:, None], full(items, score[:, None], b), valid.to(score.device),
                                         source=self.name, **spans, **self.centring(valid), **matched,
                                         region=full(items, result["region"], b, False)[:, None],
                                         units=full(items, result["units"], b, False)[:, None],
                                         levels=full(items, result["levels"], b, 0.0)[:, None],
                                         shift=full(items, result["shift"], b, 0.0)[:, None],
                                         cluster=full(items, chosen, b, -1)[:, None],
                                         inserted=full(items, inserted, b, -1)[:, None],
                                         tries=full(items, tries, b)[:, None],
                                         level=full(items, tries + start - 1, b)[:, None],
                                         change_ratio=full(items, result["change_ratio"], b)[:, None])}

    def matched_levels(self) -> Tensor:
        """Float[C]: the value each unit is set to where a matched positive redraws it (``matched_insert``, else
        ``insert``, x the unit's dissection threshold)."""
        multiple = float(self.options.matched_insert or self.options.insert)
        return multiple * self.task_concepts.thresholds.float().clamp_min(0)

    def matched_positives(self, ctx: MiningContext, items: Tensor, z: Tensor, feats: Tensor, original: Tensor,
                          result: dict[str, Tensor], b: int) -> dict[str, Tensor]:
        """``{"matched_positive": Float[B, 1, ...] model inputs, "matched": Bool[B, 1]}`` for the negatives' meta
        (``options.matched_positive``): for each swap of the edited anchors ``items`` Long[M] (latents ``z``, layer
        features ``feats`` Float[M, C, h, w], unedited GAN images ``original``, ``result`` of the edit loop), the
        source value redrawn as itself on the swap's final region: the units the swap ablated, set to ``insert`` x
        their dissection threshold, as the swap set its target's (``matched_insert`` x, where set). Kept where the
        task still reads the anchor's caption as true of the redraw; swaps from the default value (no units ablated)
        and steered swaps have none.
        Shares in ``last_stats``: ``matched`` (of the edits), ``matched_still_true`` (of the redraws made)."""
        ablated = result["units"] & (result["levels"] == 0)  # [M, C]: the source's units (a steered swap sets none)
        has = ablated.any(1)
        images = original.clone()
        if bool(has.any()):
            idx = has.nonzero().squeeze(1)
            dev = feats.device
            levels = ablated[idx].float() * self.matched_levels()[None]
            a = ablated[idx].to(feats)[:, :, None, None] * result["region"][idx].to(feats)[:, None]
            images[idx.to(dev)] = self._editor().generate(z[idx.to(dev)], ablation=a,
                                                          replacement=levels.to(feats)[:, :, None, None],
                                                          features=feats[idx.to(dev)])
        inputs = self.to_input(images)
        # only the redraws are read: the segmenter is the costliest part of an edit step (about 15 ms an image on
        # one thread), and an item without a redraw gets no matched positive whatever it reads
        still = torch.zeros(has.shape[0], dtype=torch.bool)
        if bool(has.any()):
            read = has.nonzero().squeeze(1)
            still[read] = torch.as_tensor(self._ask_task(ctx, items[read], inputs[read.to(inputs.device)],
                                                         "caption_still_true", "Bool[M]", "matched_positive",
                                                         "false"), dtype=torch.bool).cpu()
        matched = has & still
        self.last_stats["matched"] = float(matched.float().mean()) if matched.numel() else 0.0
        self.last_stats["matched_still_true"] = float(still[has].float().mean()) if bool(has.any()) else 0.0
        return {"matched_positive": self.scatter_items(items, inputs, b, 0.0)[:, None],
                "matched": self.scatter_items(items, matched, b, False)[:, None].to(inputs.device)}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.concepts is not None:
            state["concepts"] = self.concepts.state()
        if self.task_concepts is not None:
            state["task_concepts"] = self.task_concepts.state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "concepts" in state:
            self.concepts = Concepts.from_state(state["concepts"])
        if "task_concepts" in state:
            self.task_concepts = TaskConcepts.from_state(state["task_concepts"])
