"""gan-targeted with the task's concepts (concepts = "task"): the dissection against a task's segmentation, ranked by
specificity, the choice of concept inside the salient region, and the generator end to end on the toy GAN task."""

import json

import attrs
import pytest
import torch
import torch.nn.functional as F

from negmine.errors import PluginError
from negmine.testing import batch_context
from negmine_gan.concepts import TaskConcepts, compute_task_concepts, specificity, unit_ious
from negmine_gan.targeted import GanTargetedEdits
from negmine_toy.task import build_toy


def test_specificity_is_the_iou_minus_the_best_other_concepts_by_brute_force():
    g = torch.Generator().manual_seed(0)
    iou = torch.rand(4, 9, generator=g)
    iou[1, 3] = iou[2, 3] = 0.99  # a tie for the best concept: neither is specific
    spec = specificity(iou)
    for k in range(4):
        for u in range(9):
            best_other = max(float(iou[j, u]) for j in range(4) if j != k)
            assert float(spec[k, u]) == pytest.approx(float(iou[k, u]) - best_other)
    assert float(spec[1, 3]) == float(spec[2, 3]) == 0.0


class PlantedEditor:
    """A 4x4 'GAN layer' of 16 units on latents Float[m, 48] in [0, 1): concept a where z[:, :16] < 0.1, concept b
    where z[:, 16:32] < 0.1 (and not a). Units 0-3 draw a, units 4-7 draw b, units 8-11 draw every object, twice as
    strongly (a geometry unit), units 12-15 never fire. Images are the concept masks, 8x8, in channels 0 and 1."""

    def features(self, z):
        a = (z[:, :16] < 0.1).view(-1, 4, 4).float()
        b = (z[:, 16:32] < 0.1).view(-1, 4, 4).float() * (1 - a)
        jitter = 1 + z[:, 32:48].view(-1, 4, 4)  # distinct values, so that a quantile cuts inside a concept
        units = [a * jitter] * 4 + [b * jitter] * 4 + [2 * (a + b) * jitter] * 4 + [torch.zeros_like(a)] * 4
        return torch.stack(units, 1)

    def generate(self, z, features=None):
        h = self.features(z) if features is None else features
        masks = torch.stack([(h[:, 0] > 0).float(), (h[:, 4] > 0).float(), torch.zeros_like(h[:, 0])], 1)
        return F.interpolate(masks, scale_factor=2, mode="nearest")


def planted_maps(images):
    a, b = images[:, 0] > 0.5, images[:, 1] > 0.5
    return ["a", "b", "background"], torch.stack([a, b, ~(a | b)], 1)


def test_task_concepts_find_the_units_of_each_concept_and_drop_a_concept_no_unit_draws_alone():
    found = compute_task_concepts(PlantedEditor(), lambda x: x, planted_maps, n_dissect=256, seed=0,
                                  device=torch.device("cpu"), z_dim=48, latents=lambda m, g: torch.rand(m, 48, generator=g))
    assert found.names == ["a", "b"] and found.dropped == ["background"]
    assert set(found.ranking[0, :4].tolist()) == {0, 1, 2, 3}
    assert set(found.ranking[1, :4].tolist()) == {4, 5, 6, 7}
    # the geometry units overlap both concepts: by IoU alone they are close behind a's own units, by specificity
    # they are about as far from a as from b
    editor = PlantedEditor()
    acts = editor.features(torch.rand(256, 48, generator=torch.Generator().manual_seed(0)))
    iou, _ = unit_ious(acts, planted_maps(F.interpolate(editor.generate(None, acts), size=4))[1])
    assert float(iou[0, 8]) > 0.1 and abs(float(found.specificity[0, 8])) < 0.1
    assert found.thresholds.shape == (16,) and found.sizes.tolist() == [4, 4]
    # every named concept's mean feature over the cells holding it (a steering edit's ends), by brute force
    z = torch.rand(256, 48, generator=torch.Generator().manual_seed(0))  # the dissection's latents
    acts = editor.features(z)
    seg = planted_maps(F.interpolate(editor.generate(None, acts), size=4))[1]
    assert found.mean_names == ["a", "b", "background"]
    for k in range(3):
        cells = [(n, i, j) for n in range(256) for i in range(4) for j in range(4) if seg[n, k, i, j]]
        want = torch.stack([acts[n, :, i, j] for n, i, j in cells]).mean(0)
        torch.testing.assert_close(found.means[k], want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(found.steering(["a", "background"], ["b", "a"]),
                               torch.stack([found.means[1] - found.means[0], found.means[0] - found.means[2]]))
    # checkpointable, and concepts saved before the means were kept load without them
    again = TaskConcepts.from_state(found.state())
    assert again.names == found.names and torch.equal(again.ranking, found.ranking)
    assert again.mean_names == found.mean_names and torch.equal(again.means, found.means)
    old = {k: v for k, v in found.state().items() if k not in ("means", "mean_names")}
    assert TaskConcepts.from_state(old).means is None


def test_a_concept_map_of_the_wrong_shape_is_refused():
    def bad(images):
        return ["a", "b"], torch.zeros(images.shape[0], 3, 8, 8, dtype=torch.bool)

    with pytest.raises(PluginError, match="concept_maps returned maps of shape"):
        compute_task_concepts(PlantedEditor(), lambda x: x, bad, n_dissect=8, seed=0, device=torch.device("cpu"),
                              z_dim=48, latents=lambda m, g: torch.rand(m, 48, generator=g))


def test_presence_and_the_draw_among_the_concepts_drawn_in_the_region_by_brute_force():
    g = torch.Generator().manual_seed(1)
    concepts = TaskConcepts(["a", "b", "c"], torch.tensor([[0, 1, 2, 3], [2, 3, 0, 1], [3, 0, 1, 2]]),
                            torch.zeros(3, 4), torch.full((4,), 0.5), torch.tensor([2, 1, 4]))
    feats = torch.rand(5, 4, 3, 3, generator=g)
    feats[4] = 0.0  # nothing drawn anywhere: every concept as likely
    region = torch.rand(5, 3, 3, generator=g) > 0.4
    region[:, 1, 1] = True
    presence = concepts.presence(feats, region, units=2)
    for m in range(5):
        cells = region[m].nonzero().tolist()
        for k in range(3):
            top = concepts.ranking[k, :min(2, int(concepts.sizes[k]))].tolist()  # b has one specific unit
            want = sum(float(feats[m, u, i, j] > 0.5) for u in top for i, j in cells) / (len(top) * len(cells))
            assert float(presence[m, k]) == pytest.approx(want)
    gen = GanTargetedEdits(GanTargetedEdits.Options(concepts="task", units=0.5))
    gen.task_concepts = concepts
    order, probs = gen.task_concept_order(feats, region, channels=4)
    for m in range(5):
        p = presence[m]
        drawn = [k for k in range(3) if p[k] > 0 and p[k] >= 0.5 * p.max()] or [0, 1, 2]
        got = {int(order[m, j]): float(probs[m, j]) for j in range(3)}
        assert got == pytest.approx({k: (1 / len(drawn) if k in drawn else 0.0) for k in range(3)})
    # the units of a try: the first ones by specificity, never more than the concept's specific ones
    chosen = torch.tensor([0, 1, 2, 1])
    units = concepts.top_units(chosen, 3, channels=4)
    for m, k in enumerate(chosen.tolist()):
        want = torch.zeros(4, dtype=torch.bool)
        want[concepts.ranking[k, :min(3, int(concepts.sizes[k]))]] = True
        assert torch.equal(units[m], want)


def test_edit_concepts_restricts_the_draw_and_refuses_unknown_or_undrawable_names():
    concepts = TaskConcepts(["cube", "cylinder", "red"], torch.tensor([[0, 1], [1, 0], [0, 1]]), torch.zeros(3, 2),
                            torch.full((2,), 0.5), torch.tensor([1, 1, 1]), dropped=["sphere"])
    feats = torch.zeros(3, 2, 2, 2)
    feats[0, 0] = 1.0  # unit 0 (cube, red) drawn everywhere, unit 1 (cylinder) nowhere
    feats[1, 1] = 1.0  # only cylinder drawn
    region = torch.ones(3, 2, 2, dtype=torch.bool)  # item 2: nothing drawn
    gen = GanTargetedEdits(GanTargetedEdits.Options(concepts="task", units=0.5, edit_concepts="cube, cylinder"))
    gen.task_concepts = concepts
    order, probs = gen.task_concept_order(feats, region, channels=2)
    got = [{concepts.names[int(order[m, j])]: float(probs[m, j]) for j in range(3)} for m in range(3)]
    assert got[0] == {"cube": 1.0, "cylinder": 0.0, "red": 0.0}  # red is drawn there too, but not allowed
    assert got[1] == {"cube": 0.0, "cylinder": 1.0, "red": 0.0}
    assert got[2] == {"cube": 0.5, "cylinder": 0.5, "red": 0.0}  # nothing drawn: any allowed concept
    for wrong, message in (("cyllinder", "'cyllinder' is not a concept of the task \\(did you mean 'cylinder'\\?\\)"),
                           ("sphere,cub", "'sphere' has no unit of its own in GAN layer 'layer4'; 'cub' is not")):
        gen = GanTargetedEdits(GanTargetedEdits.Options(concepts="task", edit_concepts=wrong))
        with pytest.raises(PluginError, match=message):
            gen.allowed_concepts(concepts)


def _context(task):
    return batch_context(task, torch.arange(12))


def _channel_maps(images):
    """The toy task's stand-in segmenter: each pixel belongs to its brightest channel."""
    top = images.argmax(1)
    return ["red", "green", "blue"], torch.stack([top == c for c in range(3)], 1)


def test_gan_targeted_with_task_concepts_ablates_the_chosen_concepts_top_units_and_is_seeded_and_checkpointable():
    task = build_toy("gan", seed=0)
    task.resources["concept_maps"] = _channel_maps
    ctx = _context(task)
    opts = GanTargetedEdits.Options(concepts="task", min_specificity=0.0, dissect_samples=64, max_tries=3,
                                    units=0.125, units_step=0.125, accept=10.0)  # never accepted: 3 tries each
    gen = GanTargetedEdits(opts, seed=4, task=task)
    first = gen.generate(ctx)[0]
    concepts = gen.task_concepts
    assert gen.concepts is None and 1 <= len(concepts.names) <= 3
    assert set(concepts.names) | set(concepts.dropped) == {"red", "green", "blue"}
    chosen = first.meta["cluster"][:, 0]
    assert ((chosen >= 0) & (chosen < len(concepts.names))).all()
    count = round((opts.units + 2 * opts.units_step) * 32)  # the last (third) try's units
    for k in range(12):
        want = torch.zeros(32, dtype=torch.bool)
        want[concepts.ranking[chosen[k], :min(count, int(concepts.sizes[chosen[k]]))]] = True
        assert torch.equal(first.meta["units"][k, 0], want)
    assert (concepts.sizes >= 1).all() and (concepts.sizes < count).any()  # the cap is exercised
    again = GanTargetedEdits(opts, seed=4, task=task)
    assert torch.equal(again.generate(ctx)[0].inputs, first.inputs)
    restored = GanTargetedEdits(opts, seed=0, task=task)
    restored.load_state_dict(gen.state_dict())
    assert restored.task_concepts.names == concepts.names
    assert torch.equal(restored.task_concepts.ranking, concepts.ranking)


def test_task_concepts_on_a_task_without_concept_maps_are_refused_naming_the_resource_and_the_way_out(capsys):
    from negmine.cli import main

    task = build_toy("gan", seed=0)
    with pytest.raises(PluginError, match="concept_maps.*set concepts = 'model'"):
        GanTargetedEdits(GanTargetedEdits.Options(concepts="task", dissect_samples=16), seed=0,
                         task=task).generate(_context(task))
    # from the command line: one message, exit 2, no traceback
    assert main(["train", "--task", "toy", "--profile", "gan", "-n", "random", "-n", "gan-targeted",
                 "--gan-targeted-concepts", "task", "--steps", "1", "--eval-size", "10", "-q"]) == 2
    err = capsys.readouterr().err
    assert "concept_maps" in err and "Traceback" not in err


def test_swap_edits_take_the_value_at_the_spot_to_another_one_by_brute_force():
    """insert > 0: the source is the allowed concept most drawn in the region (when its presence reaches ``present``),
    else the default (-1); the target may be any other allowed value or the default; the source's specific units are
    ablated (level 0) and the target's set to insert x their dissection threshold."""
    concepts = TaskConcepts(["cube", "cylinder", "red"], torch.tensor([[0, 1, 2, 3], [2, 3, 0, 1], [1, 0, 3, 2]]),
                            torch.zeros(3, 4), torch.tensor([0.5, 1.0, 2.0, 4.0]), torch.tensor([2, 1, 1]),
                            dropped=["sphere"])
    feats = torch.zeros(4, 4, 3, 3)
    feats[0, 0:2] = 9.0  # cube's units (0, 1) on everywhere
    feats[1, 2] = 9.0  # cylinder's unit (2) on everywhere
    feats[2, 0, 0, 0] = 9.0  # a trace of cube: 1 of 18 (unit, cell) pairs, below present = 0.1
    feats[3, 1] = 9.0  # red's unit (1) on everywhere, and half of cube's: red is not allowed
    region = torch.ones(4, 3, 3, dtype=torch.bool)
    gen = GanTargetedEdits(GanTargetedEdits.Options(concepts="task", units=0.5, insert=8.0,
                                                    edit_concepts="cube,cylinder"))
    gen.task_concepts = concepts
    source, alternatives = gen.swap_sources(feats, region, channels=4)
    assert source.tolist() == [0, 1, -1, 0]
    # columns: default, cube, cylinder, red
    assert alternatives.tolist() == [[True, False, True, False], [True, True, False, False],
                                     [False, True, True, False], [True, False, True, False]]
    units, levels = gen.swap_units(torch.tensor([0, 1, -1, 0]), torch.tensor([1, -1, 0, 1]), count=4, channels=4)
    for m, (src, tgt) in enumerate([(0, 1), (1, -1), (-1, 0), (0, 1)]):
        ablated = set(concepts.ranking[src, :int(concepts.sizes[src])].tolist()) if src >= 0 else set()
        inserted = set(concepts.ranking[tgt, :int(concepts.sizes[tgt])].tolist()) if tgt >= 0 else set()
        assert set(units[m].nonzero().flatten().tolist()) == ablated | inserted
        for u in range(4):
            want = 8.0 * float(concepts.thresholds[u]) if u in inserted else 0.0
            assert float(levels[m, u]) == pytest.approx(want)


def test_gan_targeted_swap_edits_end_to_end_regenerate_from_their_units_levels_and_region():
    task = build_toy("gan", seed=0)
    task.resources["concept_maps"] = _channel_maps
    ctx = _context(task)
    opts = GanTargetedEdits.Options(concepts="task", min_specificity=0.0, dissect_samples=64, max_tries=2,
                                    units=0.125, insert=8.0, present=0.0)
    gen = GanTargetedEdits(opts, seed=4, task=task)
    negs = gen.generate(ctx)[0]
    concepts = gen.task_concepts
    source, target = negs.meta["cluster"][:, 0], negs.meta["inserted"][:, 0]
    assert (source != target).all() and ((target >= -1) & (target < len(concepts.names))).all()
    assert (target >= 0).any() and (target == -1).any()  # edits inserting a value, and edits to the default
    levels, units = negs.meta["levels"][:, 0], negs.meta["units"][:, 0]
    for k in range(12):
        t = int(target[k])
        on = levels[k] > 0
        assert torch.equal(on & ~units[k], torch.zeros(32, dtype=torch.bool))  # a level only on an edited unit
        assert bool(on.any()) == (t >= 0)
        assert torch.allclose(levels[k][on], 8.0 * concepts.thresholds[on].float())
        if t >= 0:  # the inserted units are the target's first specific ones
            assert set(on.nonzero().flatten().tolist()) <= set(concepts.ranking[t, :int(concepts.sizes[t])].tolist())
    # the edit regenerates from the latent, the units, their levels and the region
    editor = gen._editor()
    z = ctx.batch.extras["latent"]
    region = negs.meta["region"][:, 0].float()
    a = units.float()[:, :, None, None] * region[:, None]
    v = levels[:, :, None, None].expand_as(a)
    again = gen.to_input(editor.generate(z, ablation=a, replacement=v))
    assert torch.allclose(again, negs.inputs[:, 0], atol=1e-5)
    assert gen.last_stats["from_default"] + gen.last_stats["to_default"] <= 1.0
    assert gen.last_stats["units_ablated"] + gen.last_stats["units_inserted"] == pytest.approx(
        float(units.float().sum(1).mean()))  # each edited unit counted once, as ablated or as inserted
    assert torch.equal(GanTargetedEdits(opts, seed=4, task=task).generate(ctx)[0].inputs, negs.inputs)


def test_insert_needs_the_tasks_concepts():
    with pytest.raises(PluginError, match="insert = 8 needs concepts = 'task'"):
        GanTargetedEdits(GanTargetedEdits.Options(insert=8.0))


def test_swaps_on_the_values_cells_edit_only_where_the_task_reads_the_value_being_replaced():
    """swap_cells = value: each try's region is cut to the cells the task reads as the source value (a task concept,
    or default_concept for the default); a region holding none of them has nothing to swap: the edit is dropped
    (counted in off_value)."""
    task = build_toy("gan", seed=0)
    task.resources["concept_maps"] = _channel_maps
    ctx = _context(task)
    opts = GanTargetedEdits.Options(concepts="task", min_specificity=0.0, dissect_samples=64, max_tries=2,
                                    units=0.125, insert=8.0, present=0.0, swap_cells="value", default_concept="blue",
                                    region_threshold=0.0)  # the whole grid: the cut alone decides where
    gen = GanTargetedEdits(opts, seed=4, task=task)
    negs = gen.generate(ctx)[0]
    source = negs.meta["cluster"][:, 0]
    originals = gen.originals(ctx, ctx.batch.extras["latent"])[1]
    names, maps = _channel_maps(gen.to_input(originals))
    region = negs.meta["region"][:, 0]
    off = 0
    for k in range(12):
        name = gen.task_concepts.names[int(source[k])] if int(source[k]) >= 0 else "blue"
        value = maps[k, names.index(name)].float()
        cells = torch.nn.functional.adaptive_avg_pool2d(value[None, None], region.shape[-2:])[0, 0] >= 0.25
        if (region[k] & cells).any():
            assert torch.equal(region[k], region[k] & cells)  # nothing edited off the value's cells
        else:
            off += 1
            assert not bool(negs.valid[k, 0])
    assert off < 12 and gen.last_stats["off_value"] == pytest.approx(off / 12)
    assert (region.flatten(1).sum(1) < region[0].numel()).sum() >= 12 - off  # the cut took cells away
    # a default value drawn nowhere, and every spot read as the default (present = 1): nothing to swap, all dropped
    def with_nowhere(images):
        names, maps = _channel_maps(images)
        return [*names, "nowhere"], torch.cat([maps, torch.zeros_like(maps[:, :1])], 1)

    task.resources["concept_maps"] = with_nowhere
    nowhere = GanTargetedEdits(GanTargetedEdits.Options(**{**attrs.asdict(opts), "default_concept": "nowhere",
                                                           "present": 1.0}), seed=4, task=task)
    assert not nowhere.generate(ctx)[0].valid.any() and nowhere.last_stats["off_value"] == 1.0
    task.resources["concept_maps"] = _channel_maps
    with pytest.raises(PluginError, match="default_concept 'bleu' is not a concept of the task \\(did you mean 'blue'"):
        GanTargetedEdits(GanTargetedEdits.Options(**{**attrs.asdict(opts), "default_concept": "bleu"}), seed=4,
                         task=task).generate(ctx)
    with pytest.raises(PluginError, match="swap_cells = 'value' needs insert > 0 and default_concept"):
        GanTargetedEdits(GanTargetedEdits.Options(concepts="task", insert=8.0, swap_cells="value"))


def _steering_options(**extra):
    """Swaps between red and blue (the toy GAN's channels with units of their own) and green, which no unit draws
    alone (the default, as sphere on Audio CLEVRGAN)."""
    settings = dict(concepts="task", min_specificity=0.0, dissect_samples=64, max_tries=2, units=0.125, insert=8.0,
                    present=0.0, swap_cells="value", default_concept="green", region_threshold=0.0, steer=2.0)
    return GanTargetedEdits.Options(**{**settings, **extra})


def test_steered_swaps_move_every_channel_of_the_cells_by_the_values_mean_difference_and_regenerate():
    """steer > 0: a swap to a value of steer_to sets no unit and moves every channel of its cells by steer x (the
    target's mean feature - the source's); the other targets are inserted as before; the edit regenerates from the
    latent, the region and the exported shift."""
    task = build_toy("gan", seed=0)
    task.resources["concept_maps"] = _channel_maps
    ctx = _context(task)
    gen = GanTargetedEdits(_steering_options(), seed=4, task=task)
    negs = gen.generate(ctx)[0]
    concepts = gen.task_concepts
    source, target = negs.meta["cluster"][:, 0], negs.meta["inserted"][:, 0]
    shift, units = negs.meta["shift"][:, 0], negs.meta["units"][:, 0]
    names = [concepts.names[k] if k >= 0 else "green" for k in source.tolist()]
    targets = [concepts.names[k] if k >= 0 else "green" for k in target.tolist()]
    valid = negs.valid[:, 0]
    assert valid.sum() >= 6 and gen.last_stats["steered"] == 1.0
    for k in range(12):
        want = 2.0 * (concepts.means[concepts.mean_names.index(targets[k])]
                      - concepts.means[concepts.mean_names.index(names[k])])
        torch.testing.assert_close(shift[k], want.float())
        assert not units[k].any() and not negs.meta["levels"][k, 0].any()
    editor = gen._editor()
    z = ctx.batch.extras["latent"]
    region = negs.meta["region"][:, 0].float()
    again = gen.to_input(editor.generate(z, shift=shift[:, :, None, None] * region[:, None]))
    torch.testing.assert_close(again[valid], negs.inputs[valid, 0], atol=1e-5, rtol=1e-5)
    # steer_to names the targets steered: the others are swaps by insertion, as without steer
    one = GanTargetedEdits(_steering_options(steer_to="red"), seed=4, task=task)
    negs = one.generate(ctx)[0]
    target = [one.task_concepts.names[k] if k >= 0 else "green" for k in negs.meta["inserted"][:, 0].tolist()]
    moved = negs.meta["shift"][:, 0].abs().sum(1) > 0
    assert moved.tolist() == [t == "red" for t in target] and 0 < int(moved.sum()) < 12
    levels = negs.meta["levels"][:, 0]
    assert all(bool(levels[k].any()) == (t not in ("red", "green")) for k, t in enumerate(target))
    assert one.last_stats["steered"] == pytest.approx(float(moved.float().mean()))


def test_steering_options_are_checked_and_old_concepts_are_dissected_again():
    with pytest.raises(PluginError, match="steer = 2 needs swap_cells = 'value'"):
        GanTargetedEdits(GanTargetedEdits.Options(concepts="task", insert=8.0, steer=2.0))
    with pytest.raises(PluginError, match="steer_to = 'red' needs steer > 0"):
        GanTargetedEdits(GanTargetedEdits.Options(concepts="task", insert=8.0, steer_to="red"))
    task = build_toy("gan", seed=0)
    task.resources["concept_maps"] = _channel_maps
    ctx = _context(task)
    with pytest.raises(PluginError, match="steer_to: 'rde' is not a concept of the task \\(did you mean 'red'\\?\\)"):
        GanTargetedEdits(_steering_options(steer_to="rde"), seed=4, task=task).generate(ctx)
    # a checkpoint whose concepts keep no means (written before steering): dissected again, to the same units
    gen = GanTargetedEdits(_steering_options(), seed=4, task=task)
    first = gen.generate(ctx)[0]
    state = gen.state_dict()
    state["task_concepts"] = {k: v for k, v in state["task_concepts"].items() if k not in ("means", "mean_names")}
    restored = GanTargetedEdits(_steering_options(), seed=4, task=task)
    restored.load_state_dict(state)
    assert restored.task_concepts.means is None
    restored.generate(ctx)
    assert torch.equal(restored.task_concepts.means, gen.task_concepts.means)
    assert torch.equal(restored.task_concepts.ranking, gen.task_concepts.ranking)
    assert first.meta["shift"].abs().sum() > 0


def test_retarget_off_keeps_each_swaps_first_target_through_its_retries():
    task = build_toy("gan", seed=0)
    task.resources["concept_maps"] = _channel_maps
    ctx = _context(task)

    def targets(**extra):
        opts = _steering_options(accept=10.0, **extra)  # never accepted: every item takes all its tries
        gen = GanTargetedEdits(opts, seed=4, task=task)
        return gen.generate(ctx)[0].meta["inserted"][:, 0]

    first = targets(max_tries=1)  # the first draw of each item
    assert torch.equal(targets(max_tries=4, retarget=False), first)
    assert not torch.equal(targets(max_tries=4), first)  # retargeting (the default) redraws them
    with pytest.raises(PluginError, match="retarget = false needs insert > 0"):
        GanTargetedEdits(GanTargetedEdits.Options(concepts="task", retarget=False))


def test_matched_positives_redraw_each_swaps_source_as_itself_where_the_caption_stays_true(tmp_path):
    """matched_positive: the swaps are those of the plain generator; each swap that ablated units of its source gets
    the source redrawn as itself on the swap's region (those units set to insert x their threshold), by brute force,
    where the task still reads the caption as true of the redraw; swaps from the default (no units) get none."""
    from negmine import Trainer
    from negmine.config import check_generator_options
    from negmine_random.generator import RandomNegatives

    task = build_toy("gan", seed=0)
    task.resources["concept_maps"] = _channel_maps
    refused = {3, 7}  # the task reads the caption of these anchors' redraws as false
    asked = []

    def still_true(ids, images):
        asked.append((ids.clone(), images.clone()))
        return torch.tensor([int(i) not in refused for i in ids])

    task.resources["caption_still_true"] = still_true
    ctx = _context(task)
    settings = dict(concepts="task", min_specificity=0.0, dissect_samples=64, max_tries=2, units=0.125, insert=8.0,
                    present=0.1)  # sources of both kinds on this batch
    plain = GanTargetedEdits(GanTargetedEdits.Options(**settings), seed=4, task=task).generate(ctx)[0]
    gen = GanTargetedEdits(GanTargetedEdits.Options(**settings, matched_positive=True), seed=4, task=task)
    negs = gen.generate(ctx)[0]
    assert torch.equal(negs.inputs, plain.inputs) and torch.equal(negs.valid, plain.valid)
    assert "matched" not in plain.meta
    units, levels, region = negs.meta["units"][:, 0], negs.meta["levels"][:, 0], negs.meta["region"][:, 0].float()
    ablated = units & (levels == 0)
    has = ablated.any(1)
    assert has.any() and (~has).any()  # swaps from a value with units, and from the default
    thresholds = gen.task_concepts.thresholds.float().clamp_min(0)
    z = ctx.batch.extras["latent"]
    a = ablated.float()[:, :, None, None] * region[:, None]
    v = (ablated.float() * 8.0 * thresholds[None])[:, :, None, None].expand_as(a)
    redrawn = gen.to_input(gen._editor().generate(z, ablation=a, replacement=v))
    matched = negs.meta["matched"][:, 0]
    want = has & torch.tensor([k not in refused for k in range(12)])
    assert torch.equal(matched, want) and bool(matched.any())
    torch.testing.assert_close(negs.meta["matched_positive"][has, 0], redrawn[has], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(redrawn[has], gen.to_input(gen.originals(ctx, z)[1])[has])  # the redraw is not the original
    # the task read the redraws, and only them (an item without one gets no matched positive whatever it reads)
    asked_ids, asked_images = asked[-1]
    assert torch.equal(asked_ids, ctx.batch.ids[has])
    torch.testing.assert_close(asked_images, redrawn[has], atol=1e-5, rtol=1e-5)
    assert gen.last_stats["matched"] == pytest.approx(float(want.float().mean()))
    # matched_insert: a gentler redraw, the source's units set to that multiple of their threshold; the swaps unchanged
    gentle = GanTargetedEdits(GanTargetedEdits.Options(**settings, matched_positive=True, matched_insert=2.0), seed=4,
                              task=task).generate(ctx)[0]
    assert torch.equal(gentle.inputs, plain.inputs)
    v2 = (ablated.float() * 2.0 * thresholds[None])[:, :, None, None].expand_as(a)
    redrawn2 = gen.to_input(gen._editor().generate(z, ablation=a, replacement=v2))
    torch.testing.assert_close(gentle.meta["matched_positive"][has, 0], redrawn2[has], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(redrawn2[has], redrawn[has])
    with pytest.raises(PluginError, match="matched_insert = 2 needs matched_positive"):
        GanTargetedEdits(GanTargetedEdits.Options(**settings, matched_insert=2.0), task=task)
    # the option is checked: it needs swaps, and replaces the comparison as localize and centring do
    with pytest.raises(PluginError, match="matched_positive needs insert > 0"):
        GanTargetedEdits(GanTargetedEdits.Options(concepts="task", matched_positive=True))
    problems: list[str] = []  # the config check reports the clash before training, with the other problems
    check_generator_options("", "gan-targeted", {"insert": 8.0, "matched_positive": True, "localize": "word"},
                            {"gan-targeted": GanTargetedEdits}, problems)
    assert len(problems) == 1 and "set only one of them" in problems[0], problems
    problems = []
    check_generator_options("", "gan-targeted", {"matched_positi": True}, {"gan-targeted": GanTargetedEdits},
                            problems)
    assert problems and "matched_positive" in problems[0], problems
    # a trainer trains on them
    config = {"steps": 2, "negatives": ["random", "gan-targeted"], "eval_size": 20, "log_every": 1,
              "generators": {"gan-targeted": {**settings, "matched_positive": True}}}
    Trainer(task, config, generators=[RandomNegatives, GanTargetedEdits], run_dir=tmp_path / "run").fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("gan-targeted/side0/count", 0) > 0 for r in rows)


def _one_object_by_colour(images):
    """A stand-in describer: one object per image, coloured by the image's brightest mean channel."""
    names = ("red", "green", "blue")
    return [[{"shape": "cube", "color": names[int(img.mean((1, 2)).argmax())], "material": "rubber", "size": "large",
              "x": 0.5, "y": 0.5}] for img in images]


def test_edits_export_writes_each_matched_positive_and_what_regenerates_it(tmp_path, monkeypatch, capsys):
    """negmine edits export with matched_positive: a PNG and a line per matched positive (null where the edit has
    none), whose latent, region cells, matched_units and matched_levels regenerate it; held-out splits are refused
    on a task that reads training pairs only, as for the other options that ask the task."""
    import numpy as np
    from PIL import Image

    import negmine.evaluate
    from negmine.cli import main

    run = tmp_path / "run"
    assert main(["train", "--task", "toy", "--profile", "gan", "-n", "random", "--steps", "2", "--eval-size", "20",
                 "--run-dir", str(run), "-q"]) == 0
    refused = {3}  # the task reads the caption of this pair's redraw as false
    load_run = negmine.evaluate.load_run

    def with_segmenter(*args, **kwargs):  # the toy task with a stand-in segmenter, as in the tests above
        task, config, state = load_run(*args, **kwargs)
        task.resources["concept_maps"] = _channel_maps
        task.resources["caption_still_true"] = lambda ids, images: torch.tensor([int(i) not in refused for i in ids])
        task.resources["describe_images"] = _one_object_by_colour
        return task, config, state

    monkeypatch.setattr(negmine.evaluate, "load_run", with_segmenter)
    options = ["concepts=task", "min_specificity=0.0", "dissect_samples=64", "max_tries=2", "units=0.125",
               "insert=8.0", "present=0.1", "matched_positive=true"]
    out = tmp_path / "edits"
    flags = [flag for option in options for flag in ("--option", option)]
    assert main(["edits", "export", str(run), "--out", str(out), "--n", "12", "--generator", "gan-targeted",
                 "--split", "train", *flags]) == 0, capsys.readouterr().err
    assert "look-matched positives: " in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "edits.jsonl").read_text().splitlines()]
    with_units = [r for r in rows if 0.0 in r["levels"]]  # swaps that ablated units of their source
    matched = [r for r in rows if r["matched_positive"] is not None]
    assert matched and len(matched) < len(rows)
    assert [r["id"] for r in matched] == [r["id"] for r in with_units if r["id"] not in refused]
    assert all(r["matched_units"] == [] and r["score_matched"] is None for r in rows if r not in matched)
    summary = json.loads((out / "edits.json").read_text())
    assert summary["matched"] == pytest.approx(len(matched) / len(rows))
    # the segmenter's reading of each redraw against the original (a clean positive changes nothing)
    from negmine_gan.export import describe_change

    assert all("matched_change" not in r for r in rows if r not in matched)
    assert summary["matched_changed"] == pytest.approx(np.mean([r["matched_change"]["changed"] for r in matched]))
    for r in matched:
        assert r["matched_change"] == describe_change(r["objects_original"], r["objects_matched"])
    # the latent, the region cells and the matched units and levels regenerate the matched positive
    task = build_toy("gan", seed=0)
    gen = GanTargetedEdits(GanTargetedEdits.Options(concepts="task", insert=8.0), task=task)
    editor = gen._editor()
    for r in matched:
        assert r["matched_units"] and all(level > 0 for level in r["matched_levels"])
        z = torch.tensor([r["latent"]])
        a = torch.zeros_like(editor.features(z))
        v = torch.zeros_like(a)
        for y, x in r["region_cells"]:
            a[0, r["matched_units"], y, x] = 1.0
            v[0, r["matched_units"], y, x] = torch.tensor(r["matched_levels"])
        regenerated = gen.to_input(editor.generate(z, ablation=a, replacement=v))[0]
        saved = torch.from_numpy(np.array(Image.open(out / r["matched_positive"]))).permute(2, 0, 1).float() / 255
        assert (regenerated - saved).abs().max() <= 1.5 / 255
        assert not torch.equal(saved, torch.from_numpy(np.array(Image.open(out / r["original"]))).permute(2, 0, 1)
                               .float() / 255)
    # held-out pairs: the toy task reads training pairs only, so the option stops the export with one message
    capsys.readouterr()
    assert main(["edits", "export", str(run), "--out", str(tmp_path / "held"), "--n", "2", "--generator",
                 "gan-targeted", *flags]) == 2
    err = capsys.readouterr().err
    assert "matched_positive asks the task" in err and "--option matched_positive=false" in err
    assert "Traceback" not in err and not (tmp_path / "held").exists()
