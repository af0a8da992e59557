"""What the GAN-edit generators share: the editor of the task's GAN, positives regenerated from latents, telemetry."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from negmine import hookimpl
from negmine.errors import PluginError, closest
from negmine.generator import NegativeGenerator, option
from negmine_gan.edit import GanEditor, check_layer_grid, resolve_gan


def to_model_input(images: Any) -> Any:
    """GAN output Float[B, 3, R, R] in [-1, 1] -> Float[B, 3, R, R] in [0, 1]: the default ``gan_to_input``."""
    return (images.clamp(-1, 1) + 1) / 2


def gan_to_input(task: Any) -> Any:
    """How the task turns its GAN's output into side-a model inputs: ``task.resources["gan_to_input"]`` (a callable
    Float[B, 3, R, R] -> model inputs [B, ...]), by default :func:`to_model_input`."""
    fn = (getattr(task, "resources", None) or {}).get("gan_to_input")
    return fn if callable(fn) else to_model_input


def value_range(x: Any) -> tuple[float, float]:
    return float(x.min()), float(x.max())


def check_image_contract(task: Any, positives: Any, generated: Any) -> None:
    """Raise a PluginError when the task's own side-a positives (Float[B, ...]) and ``gan_to_input(G(latent))`` of
    the same latents (Float[B, ...]) lie in different ranges: the edits would then differ from every positive by
    their range alone, and a model scores them low without looking at what they show (the edit group's hinge
    falls to zero while nothing is learnt). Ranges differ when either end moves by more than a quarter of the
    positives' span."""
    lo, hi = value_range(positives)
    glo, ghi = value_range(generated)
    tolerance = 0.25 * max(hi - lo, 1e-6)
    if abs(lo - glo) > tolerance or abs(hi - ghi) > tolerance:
        name = getattr(task, "name", "?")
        mapping = "its resources['gan_to_input']" if "gan_to_input" in (task.resources or {}) else (
            "the default mapping (clamp(G, -1, 1) + 1) / 2")
        raise PluginError(
            f"task {name!r}: its side-a images lie in [{lo:.3g}, {hi:.3g}], but {mapping} turns its GAN's output "
            f"for the same latents into [{glo:.3g}, {ghi:.3g}]; edited negatives would differ from every positive by "
            "their range alone. Give the task resources['gan_to_input'] = a function from GAN output to model "
            "input that matches its images (see docs/gan-edits.md)")


def warm_start_option() -> Any:
    """The ``warm_start`` option shared by the edit generators."""
    return option(0.0, "0: each step's edits start at the first level of the schedule (the paper); q in (0, 1]: start "
                  "at the level where about q of the edits are accepted on their first try (fewer tries, same "
                  "schedule)", min=0.0, max=1.0)


def edit_fraction_option() -> Any:
    """The ``edit_fraction`` option shared by the edit generators."""
    return option(1.0, "fraction of the batch's anchors given an edited negative each step (1: every anchor, the "
                  "paper)", min=0.01, max=1.0)


def drop_still_true_option() -> Any:
    """The ``drop_still_true`` option shared by the edit generators."""
    return option(False, "drop an edit that its anchor's caption still describes, as the task reads it (task resource "
                  "caption_still_true: ids Long[M], images -> Bool[M]); such an edit is a false negative (e.g. a "
                  "one-word caption whose value another object still holds)")


def keep_changes_option() -> Any:
    """The ``keep_changes`` option shared by the edit generators."""
    return option("", "keep only the edits in which the task reads one of these changes (comma-separated names, "
                  "e.g. 'shape' or 'shape,material'; task resources edit_changes: ids Long[M], images -> per edit "
                  "the names of the changes read, one per change, and edit_change_kinds: the names it can "
                  "return; keep_changes_mode says how strictly); '' keeps every edit")


def keep_changes_mode_option() -> Any:
    """The ``keep_changes_mode`` option shared by the edit generators."""
    return option("any", "with keep_changes: 'any' keeps an edit in which the task reads one of the named changes, "
                  "whatever else it reads; 'only' keeps it when every change read is a named one; 'single' when "
                  "the task reads exactly one change (one attribute of one object, or one object added or removed) "
                  "and it is a named one: the edits an oracle makes", choices=("any", "only", "single"))


def check_keep_changes(options: Any) -> None:
    """Cross-option check of an Options class (its ``__attrs_post_init__``): a ``keep_changes_mode`` other than
    'any' needs ``keep_changes`` names, else it would silently keep every edit."""
    if options.keep_changes_mode != "any" and not str(options.keep_changes or "").strip():
        raise ValueError(f"keep_changes_mode = {options.keep_changes_mode!r} needs keep_changes (e.g. 'shape'); "
                         "set keep_changes or keep_changes_mode = 'any'")


def centre_on_others_option() -> Any:
    """The ``centre_on_others`` option shared by the edit generators."""
    return option(False, "compare each edit with its positive by their scores against the anchor relative to their "
                  "mean scores against the batch's other anchors (the negatives' centre_on_others), so that a look "
                  "every edit shares (the GAN's drawing of an inserted or ablated object), which lowers an edit's "
                  "score against every caption alike, cannot meet the margin: only what the edit changed for its "
                  "own caption can. Not with localize")


def check_centring(options: Any) -> None:
    """Cross-option check: ``centre_on_others`` compares whole anchors, ``localize`` part of one."""
    if options.centre_on_others and options.localize != "none":
        raise ValueError(f"centre_on_others compares each edit on its whole caption and localize = "
                         f"{options.localize!r} on one word of it; set one of them off")


def localize_option() -> Any:
    """The ``localize`` option shared by the edit generators."""
    return option("none", "'word': compare each edit with its positive on the caption word the edit falsifies only "
                  "(task resource edit_word_spans: ids Long[M], images -> Float[M, 2] (start, end) fractions of the "
                  "anchor, NaN: none; the negatives' anchor_span), so that the loss leaves the words still true of "
                  "the edit alone; an edit with no such word is compared on the whole caption. 'word-only': the "
                  "same, and an edit with no such word is dropped. 'none': the whole caption",
                  choices=("none", "word", "word-only"))


def tries_stats(tries: Any, accepted: Any = None) -> dict[str, float]:
    """Telemetry of one batch's edits (tries Long[M], accepted Bool[M]): ``tries_mean``, ``first_try`` (the
    fraction accepted at their first try), ``accept_rate`` (the fraction whose change reached the acceptance
    threshold; the others were taken at the last try whatever they changed) and the histogram (``tries_hist/<t>``:
    edits accepted at try t)."""
    values, counts = tries.unique(return_counts=True)
    stats = {"tries_mean": float(tries.float().mean()), "first_try": float((tries == 1).float().mean())}
    if accepted is not None:
        stats["accept_rate"] = float(accepted.float().mean())
    stats.update({f"tries_hist/{int(v)}": float(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)})
    return stats


class GanEditGenerator(NegativeGenerator):
    """Base of generators that draw negatives by editing ``options.layer`` of the task's GAN.

    Subclasses set ``last_stats`` (logged with every step's metrics). A subclass that overrides a hook method calls
    the base's and marks its override ``@hookimpl`` again (pluggy markers are not inherited by overrides).
    """

    def __init__(self, options: Any = None, *, seed: int = 0, task: Any = None) -> None:
        super().__init__(options, seed=seed, task=task)
        self.editor: GanEditor | None = None
        self.last_stats: dict[str, float] = {}
        self._last_generated: tuple[Any, Any, Any] | None = None  # (z, layer features, images) of the positives
        self.start_level = 0  # escalation level of the first try (moves only with options.warm_start > 0)
        self._positives_in_batch = False  # the training split serves G(z) as side a (set at stage start)
        self._contract_checked = False  # the task's images against gan_to_input(G(z)), on the first step
        self.to_input = gan_to_input(task)

    def _editor(self) -> GanEditor:
        if self.editor is None:
            self.editor = GanEditor(resolve_gan(self.task), self.options.layer)
        return self.editor

    @hookimpl
    def negmine_stage_start(self, trainer: Any, stage: Any) -> None:
        self.wanted_changes()  # an unknown keep_changes name stops the run here, not after the first step's edits
        # positives are regenerated from their latents as floats, so quantisation cannot tell them from edits
        data = trainer.task.train
        if hasattr(data, "use_generated_positives"):
            device = trainer.device  # the split hands CPU latents; generate where the model trains
            data.use_generated_positives(
                lambda z: self.to_input(self.generate_with_features(z.to(device))[1]))
            self._positives_in_batch = True

    def generate_with_features(self, z: Any) -> tuple[Any, Any]:
        """(layer features Float[B, C, h, w], images Float[B, 3, R, R] in GAN space) of latents Float[B, Z].

        The positives of a step are generated when the batch is loaded and again by ``mine`` for the same latents;
        the last result is kept, so the GAN runs once per step for them (it dominates a step's time on a CPU)."""
        last = self._last_generated
        if last is not None and last[0].shape == z.shape and last[0].device == z.device and torch.equal(last[0], z):
            return last[1], last[2]
        editor = self._editor()
        with torch.no_grad():
            feats = editor.features(z)
            images = editor.generate(z, features=feats)
        self._last_generated = (z.detach().clone(), feats, images)
        return feats, images

    def originals(self, ctx: Any, z: Tensor) -> tuple[Tensor, Tensor]:
        """(layer features Float[B, C, h, w], unedited images Float[B, 3, R, R] in GAN space) of the batch's latents.

        When the training split already serves G(z) as side a (set up at stage start; the split may cache them by
        id), the images come from the batch and only the cheap layers up to the edited one run here."""
        if (self._positives_in_batch and self.to_input is to_model_input and torch.is_tensor(ctx.batch.a)
                and ctx.batch.a.is_floating_point()):
            return self._editor().features(z), ctx.batch.a.to(z.device) * 2 - 1  # the default mapping inverted
        feats, images = self.generate_with_features(z)
        if not self._contract_checked and not self._positives_in_batch and torch.is_tensor(ctx.batch.a):
            self._contract_checked = True  # once: the task's images and the mapping do not change
            check_image_contract(self.task, ctx.batch.a.float(), self.to_input(images))
        return feats, images

    def check_grid(self, feats: Any, image: Any, z: Any) -> None:
        """Refuse (once checked, for good) a GAN layer whose map (Float[B, C, h, w]) is not on the grid of the
        model's image embedding (Float[B, D, H, W])."""
        if getattr(self, "_grid_checked", False):
            return
        check_layer_grid(self._editor(), tuple(feats.shape[-2:]), tuple(image.values.shape[2:]), z, self.describe())
        self._grid_checked = True

    def kept_edits(self, ctx: Any, items: Tensor, edited: Tensor) -> Tensor:
        """Bool[M]: the edits (model inputs Float[M, ...] of the anchors ``items`` Long[M]) to keep as negatives.

        All of them, unless ``options.drop_still_true`` (then not those whose anchor's caption the task still reads
        as true of them; the share dropped goes to ``last_stats["still_true"]``) or ``options.keep_changes`` (then
        only those in which the task reads the named changes as ``options.keep_changes_mode`` asks; the share kept
        goes to ``last_stats["change_kept"]``). Neither check draws from the generator's random stream."""
        keep = torch.ones(items.shape[0], dtype=torch.bool)
        if getattr(self.options, "drop_still_true", False):
            still = self._ask_task(ctx, items, edited, "caption_still_true", "Bool[M]", "drop_still_true", "false")
            still = torch.as_tensor(still, dtype=torch.bool).cpu()
            if still.shape != (items.shape[0],):
                raise PluginError(f"task resource caption_still_true returned shape {tuple(still.shape)}, expected "
                                  f"({items.shape[0]},)")
            self.last_stats["still_true"] = float(still.float().mean()) if still.numel() else 0.0
            keep &= ~still
        wanted = self.wanted_changes()
        if wanted:
            changes = list(self._ask_task(ctx, items, edited, "edit_changes", "the change names per edit",
                                          "keep_changes", "''"))
            if len(changes) != items.shape[0]:
                raise PluginError(f"task resource edit_changes returned the changes of {len(changes)} edits for "
                                  f"{items.shape[0]} edits")
            changed = torch.tensor([self.changes_wanted(c, wanted) for c in changes], dtype=torch.bool)
            self.last_stats["change_kept"] = float(changed.float().mean()) if changed.numel() else 0.0
            keep &= changed
        return keep

    def anchor_spans(self, ctx: Any, items: Tensor, edited: Tensor, kept: Tensor,
                     b: int) -> tuple[dict[str, Tensor], Tensor]:
        """``({"anchor_span": Float[B, 1, 2]}, kept)`` for the negatives' meta with ``options.localize`` "word" or
        "word-only" (else ``({}, kept)``): per edited anchor ``items`` Long[M] (edits Float[M, ...], ``kept``
        Bool[M] of them negatives), the task's span of the caption word the edit falsifies, the whole anchor (0, 1)
        where it names none; with "word-only" the edits that name none leave ``kept``. The share of kept edits
        given a word goes to ``last_stats["localized"]``."""
        localize = getattr(self.options, "localize", "none")
        if localize not in ("word", "word-only"):
            return {}, kept
        spans = torch.as_tensor(self._ask_task(ctx, items, edited, "edit_word_spans", "Float[M, 2]", "localize",
                                               "'none'"), dtype=torch.float32).cpu()
        if spans.shape != (items.shape[0], 2):
            raise PluginError(f"task resource edit_word_spans returned shape {tuple(spans.shape)}, expected "
                              f"({items.shape[0]}, 2)")
        found = ~spans.isnan().any(1)
        self.last_stats["localized"] = float(found[kept].float().mean()) if bool(kept.any()) else 0.0
        whole = torch.tensor([0.0, 1.0]).repeat(b, 1)
        whole[items[found]] = spans[found]
        return {"anchor_span": whole[:, None]}, (kept & found.to(kept.device) if localize == "word-only" else kept)

    def centring(self, valid: Tensor) -> dict[str, Tensor]:
        """``{"centre_on_others": Bool[B, K]}`` for the negatives' meta with ``options.centre_on_others``, else
        ``{}``; ``valid`` Bool[B, K] gives the shape."""
        if not getattr(self.options, "centre_on_others", False):
            return {}
        return {"centre_on_others": torch.ones(valid.shape, dtype=torch.bool, device=valid.device)}

    def changes_wanted(self, read: Any, wanted: frozenset[str]) -> bool:
        """Whether an edit whose changes the task reads as ``read`` (change names; one per changed attribute of an
        object, or per object added or removed, so a name may repeat) passes ``keep_changes`` under
        ``options.keep_changes_mode``."""
        read = list(read)
        mode = getattr(self.options, "keep_changes_mode", "any")
        if mode == "single":
            return len(read) == 1 and read[0] in wanted
        if mode == "only":
            return bool(read) and set(read) <= wanted
        return bool(wanted & set(read))

    def wanted_changes(self) -> frozenset[str]:
        """The change names of ``options.keep_changes`` (empty: keep every edit), checked once against the task's
        ``resources["edit_change_kinds"]`` (an unknown name is refused with the closest known one)."""
        raw = str(getattr(self.options, "keep_changes", "") or "")
        wanted = frozenset(w.strip() for w in raw.split(",") if w.strip())
        if wanted and not getattr(self, "_changes_checked", False):
            kinds = (getattr(self.task, "resources", None) or {}).get("edit_change_kinds")
            unknown = sorted(wanted - set(kinds)) if kinds is not None else []
            if unknown:  # every unknown name at once, each with its closest known one
                named = "; ".join(f"{name!r}" + (f" (did you mean {hint!r}?)" if (hint := closest(name, kinds)) else "")
                                  for name in unknown)
                raise PluginError(f"generator {self.name!r}: keep_changes names what task "
                                  f"{getattr(self.task, 'name', '?')!r} does not read: {named}; it reads: "
                                  f"{', '.join(kinds)}")
            self._changes_checked = True
        return wanted

    def _ask_task(self, ctx: Any, items: Tensor, edited: Tensor, resource: str, returns: str, option_name: str,
                  off: str) -> Any:
        """Call the task resource ``resource(ids Long[M], edited inputs Float[M, ...])`` for the edited anchors; a
        task without it is refused, naming the option that asked and its value that turns the check off."""
        check = (getattr(self.task, "resources", None) or {}).get(resource)
        if not callable(check):
            raise PluginError(f"generator {self.name!r}: {option_name} needs the task resource {resource!r} "
                              f"(ids, images -> {returns}), which task {getattr(self.task, 'name', '?')!r} does not "
                              f"provide; set {option_name} = {off}")
        ids = ctx.batch.ids[items.to(ctx.batch.ids.device)].cpu()
        with torch.no_grad():
            return check(ids, edited.detach())

    def edit_items(self, b: int) -> Tensor:
        """Long[M]: the batch items edited this step, ascending (all of them unless ``options.edit_fraction`` < 1)."""
        fraction = getattr(self.options, "edit_fraction", 1.0)
        if fraction >= 1.0:
            return torch.arange(b)
        m = max(1, round(fraction * b))
        return torch.randperm(b, generator=self.rng)[:m].sort().values

    def escalation_start(self) -> int:
        """The escalation level of this step's first try: 0 (the paper), or the warm-start level."""
        return self.start_level if getattr(self.options, "warm_start", 0.0) > 0 else 0

    def update_start(self, tries: Tensor) -> None:
        """Warm start: move the first try's level one up when fewer than ``warm_start`` of this step's edits were
        accepted at the first try, one down otherwise, so it settles where that fraction succeeds at once."""
        target = getattr(self.options, "warm_start", 0.0)
        if target <= 0 or tries.numel() == 0:
            return
        first = float((tries == 1).float().mean())
        level = self.start_level + (1 if first < target else -1)
        self.start_level = max(0, min(int(self.options.max_tries) - 1, level))

    @staticmethod
    def scatter_items(items: Tensor, values: Tensor, b: int, fill: Any = 0) -> Tensor:
        """[B, ...] with ``values`` ([M, ...]) at rows ``items`` and ``fill`` elsewhere."""
        out = torch.full((b, *values.shape[1:]), fill, dtype=values.dtype, device=values.device)
        out[items.to(values.device)] = values
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "start_level": self.start_level}

    def load_state_dict(self, state: Any) -> None:
        super().load_state_dict(state)
        self.start_level = int(state.get("start_level", 0))

    @hookimpl
    def negmine_step_end(self, trainer: Any, step: int, metrics: dict) -> None:
        for key, value in self.last_stats.items():
            metrics[f"{self.name}/{key}"] = value
