"""GAN editing API and gan-random, on the toy task's fixed random GAN (seconds on a CPU)."""

import json

import pytest
import torch
import torch.nn.functional as F

from negmine.testing import make_context
from negmine_gan.edit import GanEditor, geodesic_region, upsample_mask
from negmine_gan.random_edit import GanRandomEdits
from negmine_toy.task import TinyGan, build_toy


def gan():
    return TinyGan(8, seed=0)


def test_editor_hook_path_equals_manual_edit():
    g = gan()
    editor = GanEditor(g, "layer4")
    z = torch.randn(5, 8)
    h = editor.features(z)
    assert h.shape == (5, 32, 8, 8)
    assert torch.equal(editor.generate(z), g(z))
    a = torch.zeros(5, 32, 8, 8)
    a[:, :10, 2:5, 3:6] = 1.0
    manual = g.output(h * (1 - a))
    torch.testing.assert_close(editor.generate(z, ablation=a), manual)
    v = torch.ones(32) * 2.0
    torch.testing.assert_close(editor.generate(z, ablation=a, replacement=v), g.output(h * (1 - a) + 2.0 * a))
    # a steering shift is added before the ablation and the replacement
    s = torch.randn(5, 32, 8, 8)
    torch.testing.assert_close(editor.generate(z, ablation=a, replacement=v, shift=s),
                               g.output((h + s) * (1 - a) + 2.0 * a))


def test_fast_path_matches_hooks():
    class Split(TinyGan):
        def features(self, z, upto):
            return self.layer4(self.layer1(z).view(-1, self.channels, 4, 4))

        def decode(self, h, after):
            return self.output(h)

    g = Split(8, seed=0)
    fast, slow = GanEditor(g, "layer4"), GanEditor(g, "layer4")
    slow.fast = False
    z = torch.randn(3, 8)
    a = torch.rand(3, 32, 8, 8) > 0.5
    torch.testing.assert_close(fast.generate(z, ablation=a.float()), slow.generate(z, ablation=a.float()))
    s = torch.randn(3, 32, 8, 8)
    torch.testing.assert_close(fast.generate(z, ablation=a.float(), shift=s),
                               slow.generate(z, ablation=a.float(), shift=s))


def test_editor_moves_the_generator_to_the_latents_device():
    # a task loads its GAN on the CPU while training may run on a GPU; the "meta" device stands in for one here
    g = gan()
    editor = GanEditor(g, "layer4")
    z = torch.randn(2, 8, device="meta")
    assert editor.features(z).device.type == "meta"
    assert editor.generate(z).device.type == "meta"
    assert next(g.parameters()).device.type == "meta"


def test_edit_leaves_pixels_outside_the_region_alone():
    g = gan()
    editor = GanEditor(g, "layer4")
    z = torch.randn(4, 8)
    region = torch.zeros(4, 8, 8, dtype=torch.bool)
    region[:, 1:3, 4:7] = True
    a = region[:, None].float().expand(4, 32, 8, 8)
    diff = (editor.generate(z, ablation=a) - g(z)).abs().amax(1)  # [4, 16, 16]
    footprint = F.interpolate(region[:, None].float(), size=16)[:, 0] > 0
    reach = F.max_pool2d(footprint[:, None].float(), 5, stride=1, padding=2)[:, 0] > 0  # conv receptive field
    assert diff[~reach].max() == 0.0
    assert diff[footprint].max() > 0.0


def brute_region(heat, seed, threshold):
    h, w = heat.shape
    mask = heat >= threshold * heat.max()
    seen, stack = set(), [tuple(seed)]
    while stack:
        y, x = stack.pop()
        if (y, x) in seen or not (0 <= y < h and 0 <= x < w) or not mask[y, x]:
            continue
        seen.add((y, x))
        stack += [(y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    out = torch.zeros(h, w, dtype=torch.bool)
    for y, x in seen:
        out[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2] = True
    return out


def test_geodesic_region_matches_flood_fill():
    g = torch.Generator().manual_seed(0)
    heat = torch.rand(6, 8, 8, generator=g)
    seeds = torch.stack([heat[i].flatten().argmax() for i in range(6)])
    seeds = torch.stack([seeds // 8, seeds % 8], 1)
    for t in (0.3, 0.6, 0.95):
        got = geodesic_region(heat, seeds, torch.full((6,), t))
        for i in range(6):
            assert torch.equal(got[i], brute_region(heat[i], seeds[i].tolist(), t))
    assert upsample_mask(got, 16).shape == (6, 16, 16)


def _context(task, n=12):
    batch = task.train.batch(torch.arange(n))
    with torch.no_grad():
        emb = (task.model.encode(0, batch.a), task.model.encode(1, batch.b))
        scores = task.model.score_matrix(*emb)
    ctx = make_context(scores, task=task, embeddings=emb)
    import attrs

    return attrs.evolve(ctx, batch=batch)


def test_gan_random_terminates_is_seeded_and_changes_images():
    task = build_toy("gan", seed=0)
    ctx = _context(task)
    opts = GanRandomEdits.Options(max_tries=4, accept=5.0)  # unreachable threshold: escalation must still end
    first = GanRandomEdits(opts, seed=3, task=task).generate(ctx)[0]
    again = GanRandomEdits(opts, seed=3, task=task).generate(ctx)[0]
    assert torch.equal(first.inputs, again.inputs)
    assert first.inputs.shape == (12, 1, 3, 16, 16) and first.valid.all()
    assert (first.meta["tries"] == 4).all()
    assert first.meta["region"].shape == (12, 1, 8, 8)
    easy = GanRandomEdits(GanRandomEdits.Options(accept=0.0), seed=3, task=task).generate(ctx)[0]
    assert (easy.meta["tries"] == 1).all()
    originals = ctx.batch.a
    assert (easy.inputs[:, 0] - originals).abs().amax() > 0
    units = easy.meta["units"][:, 0]
    assert 0 < units.float().mean() < 0.5  # about p = 0.2 of the units


def test_edits_export_writes_regenerable_edits(tmp_path, capsys):
    import json

    from negmine.cli import main
    from negmine_gan.edit import GanEditor

    run = tmp_path / "run"
    assert main(["train", "--task", "toy", "--profile", "gan", "-n", "random", "--steps", "3", "--run-dir", str(run),
                 "-q"]) == 0
    out = tmp_path / "edits"
    assert main(["edits", "export", str(run), "--out", str(out), "--n", "4", "--generator", "gan-random",
                 "--option", "accept=0.0"]) == 0
    rows = [json.loads(line) for line in (out / "edits.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all((out / r["edited"]).exists() and (out / r["region"]).exists() for r in rows)
    summary = json.loads((out / "edits.json").read_text())
    assert summary["tries_histogram"] == [0, 4]
    assert (out / summary["gallery"]).stat().st_size > 0
    assert summary["mean_change_outside"] >= 0 and all("change_inside" in r for r in rows)
    assert summary["split"] == "test"
    train_out = tmp_path / "edits-train"
    assert main(["edits", "export", str(run), "--out", str(train_out), "--n", "2", "--generator", "gan-random",
                 "--option", "accept=0.0", "--split", "train"]) == 0
    train_rows = [json.loads(line) for line in (train_out / "edits.jsonl").read_text().splitlines()]
    assert json.loads((train_out / "edits.json").read_text())["split"] == "train"
    assert [r["id"] for r in train_rows] == [0, 1]  # positions in the split
    # options that ask the task about each edit: the toy task reads training pairs only, so held-out pairs stop
    capsys.readouterr()
    assert main(["edits", "export", str(run), "--out", str(tmp_path / "held"), "--n", "2", "--generator",
                 "gan-random", "--option", "drop_still_true=true", "--option", "localize=word"]) == 2
    err = capsys.readouterr().err
    assert "drop_still_true asks the task" in err and "localize asks the task" in err and "--split train" in err
    assert "Traceback" not in err and not (tmp_path / "held").exists()
    assert all(t["latent"] != r["latent"] for t, r in zip(train_rows, rows[:2], strict=True))  # not the held-out pairs
    # ablation only: every edited unit set to 0, nothing inserted, nothing steered
    assert all(r["levels"] == [0.0] * len(r["units"]) and r["inserted"] is None and r["shift"] is None for r in rows)
    # the latent, region and units regenerate the edit exactly
    task = build_toy("gan", seed=0)
    editor = GanEditor(task.resources["gan"], "layer4")
    r = rows[0]
    z = torch.tensor([r["latent"]])
    a = torch.zeros(1, 32, 8, 8)
    for y, x in r["region_cells"]:
        a[0, r["units"], y, x] = 1.0
    from PIL import Image

    regenerated = ((editor.generate(z, ablation=a).clamp(-1, 1) + 1) / 2 * 255 + 0.5).to(torch.uint8)[0]
    saved = torch.from_numpy(__import__("numpy").array(Image.open(out / r["edited"]))).permute(2, 0, 1)
    assert (regenerated.int() - saved.int()).abs().max() <= 1


def test_pixel_change_inside_and_outside_the_region():
    from negmine_gan.export import pixel_change

    original = torch.zeros(3, 8, 8)
    edited = original.clone()
    edited[:, :2, :2] = 0.5  # a change inside the region
    edited[0, 7, 7] = 0.3  # a leak outside it
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4, :4] = True
    out = pixel_change(original, edited, mask)
    assert out["change_inside"] == pytest.approx(0.5 * 4 / 16, abs=1e-5)
    assert out["change_outside"] == pytest.approx(0.1 / 48, abs=1e-5)


def test_changed_attribute_counts():
    from negmine_gan.export import changed_attribute_counts, describe_change

    a = {"shape": "cube", "color": "red", "material": "rubber", "size": "large", "x": 0.2, "y": 0.5}
    b = dict(a, x=0.8)
    changes = [
        describe_change([a, b], [dict(a, color="blue"), b]),  # one attribute of one object
        describe_change([a, b], [dict(a, color="blue", shape="sphere"), b]),  # two attributes
        describe_change([a, b], [a]),  # an object removed
        describe_change([a], [a]),  # nothing
    ]
    assert [c["single_attribute"] for c in changes] == [True, False, False, False]
    counts = changed_attribute_counts(changes)
    assert counts == {"shape": 1, "color": 2, "material": 0, "size": 0, "removed": 1, "added": 0, "nothing": 1}


def test_positives_are_generated_once_per_step():
    """The batch's generated positives and the originals ``mine`` edits are one GAN pass, and are the same images."""
    task = build_toy("gan", seed=0)
    gen = GanRandomEdits(seed=0, task=task)
    calls = []
    editor = gen._editor()
    generate = editor.generate
    editor.generate = lambda *a, **k: calls.append(k.get("ablation") is None) or generate(*a, **k)
    z = torch.randn(5, 8)  # the toy GAN draws 8-d latents
    feats, images = gen.generate_with_features(z)
    again = gen.generate_with_features(z.clone())
    assert again[0] is feats and again[1] is images and calls == [True]
    gen.generate_with_features(z + 1)  # other latents: generated anew
    assert calls == [True, True]
    assert torch.allclose(images, generate(z), atol=1e-6)  # the same images as a plain forward pass


def test_edit_loop_can_start_at_a_later_level():
    """``start`` skips the first levels: the first try is made at that level, with its lower threshold."""
    from negmine_gan.edit import edit_until_changed

    g = gan()
    editor = GanEditor(g, "layer4")
    z = torch.randn(4, 8)
    feats, original = editor.features(z), editor.generate(z)
    pixels = torch.ones(4, 16, 16, dtype=torch.bool)
    attempts = []

    def choose(pending, attempt):
        attempts.append(attempt)
        return torch.ones(len(pending), 32, dtype=torch.bool), torch.ones(len(pending), 8, 8, dtype=torch.bool)

    # level 2 of accept 0.95 - 0.5 per level is a threshold of 0: everything is accepted on its first try
    out = edit_until_changed(editor, z, feats, original, pixels, choose, lambda x: x, 0.95, 0.5, 6, start=2)
    assert attempts == [2] and out["tries"].tolist() == [1, 1, 1, 1]
    attempts.clear()
    out = edit_until_changed(editor, z, feats, original, pixels, choose, lambda x: x, 50.0, 0.0, 3, start=9)
    assert attempts == [2] and out["tries"].tolist() == [1, 1, 1, 1]  # a start past the end is the last level


def test_warm_start_climbs_to_the_level_that_accepts_and_resumes():
    task = build_toy("gan", seed=0)
    ctx = _context(task)
    opts = GanRandomEdits.Options(max_tries=4, accept=5.0, warm_start=0.5)  # only the last level accepts
    gen = GanRandomEdits(opts, seed=0, task=task)
    levels, tries = [], []
    for _ in range(5):
        negs = gen.generate(ctx)[0]
        levels.append(int(negs.meta["level"].min()))
        tries.append(int(negs.meta["tries"].max()))
    assert levels == [3, 3, 3, 3, 3]  # the edits themselves: always the only accepting level
    # the first try climbs 0 -> 1 -> 2 -> 3; a step accepted at once probes one level lower, and climbs back
    assert tries == [4, 3, 2, 1, 2] and gen.start_level == 3
    restored = GanRandomEdits(opts, seed=0, task=task)
    restored.load_state_dict(gen.state_dict())
    assert restored.start_level == 3
    gen.update_start(torch.ones(8, dtype=torch.long))  # every edit accepted at once: one level down
    assert gen.start_level == 2
    cold = GanRandomEdits(GanRandomEdits.Options(max_tries=4, accept=5.0), seed=0, task=task)
    cold.generate(ctx)
    assert cold.start_level == 0  # warm_start = 0 (the paper): every step starts at level 0


def test_edit_fraction_edits_only_some_anchors():
    task = build_toy("gan", seed=0)
    ctx = _context(task)
    negs = GanRandomEdits(GanRandomEdits.Options(accept=0.0, edit_fraction=0.25), seed=1, task=task).generate(ctx)[0]
    valid = negs.valid[:, 0]
    assert int(valid.sum()) == 3  # a quarter of 12 anchors
    changed = (negs.inputs[:, 0] - ctx.batch.a).flatten(1).abs().amax(1) > 0
    assert torch.equal(changed, valid)  # exactly the chosen anchors were edited
    assert (negs.meta["tries"][~valid] == 0).all() and (negs.meta["units"][~valid] == 0).all()


def _raw_gan_task():
    """The toy GAN task, but its images are G(z) as the GAN draws them, in [-1, 1] (a task of a new user's)."""
    task = build_toy("gan", seed=0)
    gan = task.resources["gan"]
    for split in (task.train, task.val, task.test):
        with torch.no_grad():
            split.a = gan(split.extras["latent"])
    return task


def test_images_in_another_range_than_the_mapped_gan_output_stop_at_the_first_step(tmp_path):
    """Issue 17, item 1: edits in [0, 1] against positives in [-1, 1] trained silently with an edit hinge of zero."""
    from negmine import PluginError, Trainer
    from negmine_random.generator import RandomNegatives

    config = {"steps": 2, "negatives": ["random", "gan-random"], "eval_size": 20}
    with pytest.raises(PluginError) as err:
        Trainer(_raw_gan_task(), config, generators=[RandomNegatives, GanRandomEdits], run_dir=tmp_path / "a").fit()
    text = str(err.value)
    assert text.startswith("task 'toy': its side-a images lie in [-1, 0.998], but the default mapping "
                           "(clamp(G, -1, 1) + 1) / 2 turns its GAN's output for the same latents into [2.13e-05, 0.999]"), text
    assert "resources['gan_to_input']" in text
    # the task states its mapping: training runs, and the edits reach the model in the positives' range
    task = _raw_gan_task()
    task.resources["gan_to_input"] = lambda images: images.clamp(-1, 1)
    Trainer(task, config, generators=[RandomNegatives, GanRandomEdits], run_dir=tmp_path / "b").fit()
    edits = GanRandomEdits(GanRandomEdits.Options(accept=0.0), seed=0, task=task).generate(_context(task))[0]
    assert float(edits.inputs.min()) < -0.5


def test_a_gan_in_training_mode_is_put_in_eval_mode_and_keeps_its_statistics():
    """Issue 17, item 2: a GAN left in training mode draws with batch statistics and moves its running ones."""
    from negmine_gan.edit import resolve_gan

    task = build_toy("gan", seed=0)
    tiny = task.resources["gan"]
    bn_gan = torch.nn.Sequential()
    bn_gan.layer1, bn_gan.norm = tiny.layer1, torch.nn.BatchNorm1d(tiny.layer1.out_features)

    class WithNorm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer1, self.norm, self.layer4, self.output = tiny.layer1, bn_gan.norm, tiny.layer4, tiny.output

        def forward(self, z):
            return self.output(self.layer4(self.norm(self.layer1(z)).view(-1, tiny.channels, 4, 4)))

    gan = WithNorm().train()
    task.resources["gan"] = gan
    before = gan.norm.running_mean.clone()
    assert resolve_gan(task) is gan and not gan.training
    assert not any(p.requires_grad for p in gan.parameters())
    GanRandomEdits(GanRandomEdits.Options(max_tries=2), seed=0, task=task).generate(_context(task))
    assert torch.equal(gan.norm.running_mean, before) and int(gan.norm.num_batches_tracked) == 0


def test_acceptance_rate_is_logged():
    """Issue 17, item 5: only tries_hist/N said how many edits met their threshold."""
    task = build_toy("gan", seed=0)
    ctx = _context(task)
    never = GanRandomEdits(GanRandomEdits.Options(max_tries=3, accept=5.0), seed=0, task=task)
    never.generate(ctx)
    assert never.last_stats["accept_rate"] == 0.0 and never.last_stats["first_try"] == 0.0
    always = GanRandomEdits(GanRandomEdits.Options(accept=0.0), seed=0, task=task)
    always.generate(ctx)
    assert always.last_stats["accept_rate"] == 1.0 and always.last_stats["first_try"] == 1.0


def test_edits_export_uses_the_runs_options_and_concepts_and_records_provenance(tmp_path, capsys):
    """Issue 17, item 3: the export used default options and recomputed the concepts."""
    import json

    from negmine import checkpoint as ckpt
    from negmine.cli import main

    run = tmp_path / "run"
    assert main(["train", "--task", "toy", "--profile", "gan", "-n", "random", "-n", "gan-targeted", "--steps", "2",
                 "--gan-targeted-clusters", "0.3", "--gan-targeted-units", "0.2", "--gan-targeted-max-tries", "2",
                 "--gan-targeted-max-datapoints", "64", "--gan-targeted-dissect-samples", "32", "--eval-size", "20",
                 "--run-dir", str(run), "-q"]) == 0
    out = tmp_path / "edits"
    assert main(["edits", "export", str(run), "--out", str(out), "--n", "3", "--checkpoint", "stage-main",
                 "--option", "units=0.1", "--seed", "5"]) == 0, capsys.readouterr().err
    summary = json.loads((out / "edits.json").read_text())
    o = summary["options"]
    assert (o["clusters"], o["max_tries"], o["units"]) == (0.3, 2, 0.1)  # the run's, and the flag over them
    assert summary["options_from"] == "the run's stage 'main', overridden by ['units']"
    assert summary["concepts_from"] == "checkpoint"
    saved = ckpt.load(run / "checkpoints" / "stage-main.pt")["generators"]["gan-targeted"]["concepts"]
    clusters = {r["cluster"] for r in map(json.loads, (out / "edits.jsonl").read_text().splitlines())}
    assert clusters <= set(range(saved["centroids"].shape[0]))
    assert summary["seed"] == 5 and summary["task"] == "toy" and summary["profile"] == "gan"
    assert summary["checkpoint_path"] == str(run / "checkpoints" / "stage-main.pt")
    assert summary["gan_sha256"].startswith("weights:") and len(summary["gan_sha256"]) == 8 + 64
    assert summary["negmine_version"] and summary["negmine_commit"]
    # a bad flag is one message with the closest name
    assert main(["edits", "export", str(run), "--out", str(tmp_path / "x"), "--option", "unit=0.1"]) == 2
    assert "did you mean 'units'" in capsys.readouterr().err


def test_export_pictures_of_inputs_that_are_not_images_in_0_1():
    """A task whose inputs are normalised gets its PNGs through resources['input_to_image'], or a clear error."""
    from types import SimpleNamespace

    from negmine.errors import NegmineError
    from negmine_gan.export import images_for_png

    images = torch.rand(2, 3, 8, 8)
    plain = SimpleNamespace(resources={})
    assert torch.equal(images_for_png(plain, images), images)
    normalised = (images - 0.5) / 0.25  # e.g. mean/std normalisation: values in [-2, 2]
    with pytest.raises(NegmineError, match="input_to_image"):
        images_for_png(plain, normalised)
    task = SimpleNamespace(resources={"input_to_image": lambda x: x * 0.25 + 0.5})
    assert torch.allclose(images_for_png(task, normalised), images, atol=1e-6)


@pytest.mark.parametrize("which", ["gan-random", "gan-targeted"])
def test_drop_still_true_drops_exactly_the_edits_the_task_reads_as_still_true(which):
    """An edit its anchor's caption still describes is a false negative: with drop_still_true the generator asks the
    task (resource caption_still_true) and marks those edits invalid; the edits themselves are unchanged."""
    from negmine.errors import PluginError
    from negmine_gan.targeted import GanTargetedEdits

    task = build_toy("gan", seed=0)
    ctx = _context(task)
    cls, extra = (GanRandomEdits, {}) if which == "gan-random" else (
        GanTargetedEdits, {"max_datapoints": 200, "dissect_samples": 64, "max_tries": 3})
    seen = []

    def still_true(ids, images):  # a stand-in reader: the pairs of even id still hold their caption
        seen.append((ids.clone(), images.shape))
        return ids % 2 == 0

    task.resources["caption_still_true"] = still_true
    plain = cls(cls.Options(edit_fraction=0.5, **extra), seed=2, task=task)
    checked = cls(cls.Options(edit_fraction=0.5, drop_still_true=True, **extra), seed=2, task=task)
    a, b = plain.generate(ctx)[0], checked.generate(ctx)[0]
    assert torch.equal(a.inputs, b.inputs)  # the same edits: the check draws nothing from the generator's rng
    edited = a.valid[:, 0]
    ids = ctx.batch.ids
    assert torch.equal(b.valid[:, 0], edited & (ids % 2 != 0))
    assert len(seen) == 1 and torch.equal(seen[0][0], ids[edited]) and seen[0][1] == (int(edited.sum()), 3, 16, 16)
    assert checked.last_stats["still_true"] == pytest.approx(float((ids[edited] % 2 == 0).float().mean()))
    assert "still_true" not in plain.last_stats
    del task.resources["caption_still_true"]
    with pytest.raises(PluginError, match="caption_still_true"):
        cls(cls.Options(drop_still_true=True, **extra), seed=2, task=task).generate(ctx)


@pytest.mark.parametrize("which", ["gan-random", "gan-targeted"])
def test_keep_changes_keeps_exactly_the_edits_that_change_what_was_asked(which):
    """keep_changes = "shape": the generator asks the task what each edit changed (resource edit_changes) and keeps
    only the edits with a shape change; with drop_still_true too, an edit must pass both checks. The edits themselves
    are those of the unchecked generator."""
    from negmine_gan.targeted import GanTargetedEdits

    task = build_toy("gan", seed=0)
    ctx = _context(task)
    cls, extra = (GanRandomEdits, {}) if which == "gan-random" else (
        GanTargetedEdits, {"max_datapoints": 200, "dissect_samples": 64, "max_tries": 3})
    kinds = {0: {"shape"}, 1: {"color", "material"}, 2: set(), 3: {"shape", "removed"}}

    def changes(ids, images):  # a stand-in reader: what changed depends on the pair's id
        return [frozenset(kinds[int(i) % 4]) for i in ids]

    task.resources["edit_changes"] = changes
    task.resources["edit_change_kinds"] = ("shape", "color", "material", "size", "removed", "added")
    task.resources["caption_still_true"] = lambda ids, images: ids % 4 == 3
    plain = cls(cls.Options(edit_fraction=0.5, **extra), seed=2, task=task)
    shape = cls(cls.Options(edit_fraction=0.5, keep_changes="shape", **extra), seed=2, task=task)
    either = cls(cls.Options(edit_fraction=0.5, keep_changes=" material , shape", **extra), seed=2, task=task)
    both = cls(cls.Options(edit_fraction=0.5, keep_changes="shape", drop_still_true=True, **extra), seed=2, task=task)
    a = plain.generate(ctx)[0]
    edited, ids = a.valid[:, 0], ctx.batch.ids
    for gen, wanted in ((shape, {0, 3}), (either, {0, 1, 3}), (both, {0})):
        b = gen.generate(ctx)[0]
        assert torch.equal(a.inputs, b.inputs)
        keep = torch.tensor([int(i) % 4 in wanted for i in ids])
        assert torch.equal(b.valid[:, 0], edited & keep)
    assert shape.last_stats["change_kept"] == pytest.approx(
        float(torch.tensor([int(i) % 4 in (0, 3) for i in ids[edited]]).float().mean()))
    assert "change_kept" not in plain.last_stats


@pytest.mark.parametrize("which", ["gan-random", "gan-targeted"])
def test_keep_changes_mode_only_and_single_keep_the_edits_brute_force_says(which):
    """keep_changes_mode: 'any' keeps an edit with a named change, 'only' one whose every change is named, 'single'
    one with exactly one change, a named one (two shapes changed are two changes). Each mode's kept edits equal a
    brute-force reading of the stand-in reader's answers; the edits themselves are those of the unchecked generator."""
    from negmine_gan.targeted import GanTargetedEdits

    task = build_toy("gan", seed=0)
    ctx = _context(task)
    cls, extra = (GanRandomEdits, {}) if which == "gan-random" else (
        GanTargetedEdits, {"max_datapoints": 200, "dissect_samples": 64, "max_tries": 3})
    kinds = [("shape",), ("color", "material"), (), ("shape", "removed"), ("shape", "shape"), ("material",)]
    task.resources["edit_changes"] = lambda ids, images: [kinds[int(i) % len(kinds)] for i in ids]
    task.resources["edit_change_kinds"] = ("shape", "color", "material", "size", "removed", "added")
    plain = cls(cls.Options(edit_fraction=0.75, **extra), seed=2, task=task).generate(ctx)[0]
    edited, ids = plain.valid[:, 0], ctx.batch.ids
    rules = {"any": lambda read, wanted: any(r in wanted for r in read),
             "only": lambda read, wanted: len(read) > 0 and all(r in wanted for r in read),
             "single": lambda read, wanted: len(read) == 1 and read[0] in wanted}
    for mode, rule in rules.items():
        for names in ("shape", "shape,material"):
            gen = cls(cls.Options(edit_fraction=0.75, keep_changes=names, keep_changes_mode=mode, **extra), seed=2,
                      task=task)
            got = gen.generate(ctx)[0]
            assert torch.equal(got.inputs, plain.inputs)
            keep = torch.tensor([rule(kinds[int(i) % len(kinds)], names.split(",")) for i in ids])
            assert torch.equal(got.valid[:, 0], edited & keep), (mode, names)
    # the rules differ on this batch's edits (else the test could not tell them apart)
    read = [kinds[int(i) % len(kinds)] for i in ids[edited]]
    assert len({tuple(rule(r, ["shape"]) for r in read) for rule in rules.values()}) == 3


def test_keep_changes_mode_without_names_is_refused_by_the_config_check():
    from negmine.config import check_generator_options
    from negmine_gan.targeted import GanTargetedEdits

    for cls in (GanRandomEdits, GanTargetedEdits):
        problems: list[str] = []
        check_generator_options("", cls.name, {"keep_changes_mode": "single"}, {cls.name: cls}, problems)
        assert len(problems) == 1 and "keep_changes_mode = 'single' needs keep_changes" in problems[0], problems
        problems = []
        check_generator_options("", cls.name, {"keep_changes_mode": "singel", "keep_changes": "shape"},
                                {cls.name: cls}, problems)
        assert len(problems) == 1 and "'single'" in problems[0], problems


@pytest.mark.parametrize("which", ["gan-random", "gan-targeted"])
def test_centre_on_others_marks_every_edit_for_the_loss_and_leaves_the_edits_alone(which, tmp_path):
    """centre_on_others: the same edits, each flagged meta["centre_on_others"] for the trainer, which trains on
    them; the config check refuses it beside localize."""
    from negmine import Trainer
    from negmine.config import check_generator_options
    from negmine_gan.targeted import GanTargetedEdits
    from negmine_random.generator import RandomNegatives

    task = build_toy("gan", seed=0)
    ctx = _context(task)
    cls, extra = (GanRandomEdits, {}) if which == "gan-random" else (
        GanTargetedEdits, {"max_datapoints": 200, "dissect_samples": 64, "max_tries": 3})
    plain = cls(cls.Options(edit_fraction=0.5, **extra), seed=2, task=task).generate(ctx)[0]
    centred = cls(cls.Options(edit_fraction=0.5, centre_on_others=True, **extra), seed=2, task=task).generate(ctx)[0]
    assert torch.equal(plain.inputs, centred.inputs) and torch.equal(plain.valid, centred.valid)
    assert "centre_on_others" not in plain.meta
    flag = centred.meta["centre_on_others"]
    assert flag.dtype == torch.bool and flag.shape == centred.valid.shape and bool(flag.all())
    problems: list[str] = []
    check_generator_options("", cls.name, {"centre_on_others": True, "localize": "word"}, {cls.name: cls}, problems)
    assert len(problems) == 1 and "centre_on_others" in problems[0] and "localize = 'word'" in problems[0], problems
    config = {"steps": 2, "negatives": ["random", which], "eval_size": 20, "log_every": 1,
              "generators": {which: {"centre_on_others": True, **extra}}}
    Trainer(task, config, generators=[RandomNegatives, cls], run_dir=tmp_path / "run").fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(f"{which}/side0/count" in r and r[f"{which}/side0/count"] > 0 for r in rows)


@pytest.mark.parametrize("which", ["gan-random", "gan-targeted"])
def test_localize_word_gives_each_edit_its_tasks_word_span_and_the_whole_anchor_otherwise(which):
    """localize = "word": the generator asks the task (resource edit_word_spans) where each edit's falsified word
    lies and hands the spans to the trainer as anchor_span; an edit without one (NaN) spans the whole anchor. The
    edits and which are kept are those of the unlocalized generator; with "word-only" the wordless ones are dropped."""
    from negmine.errors import PluginError
    from negmine_gan.targeted import GanTargetedEdits

    task = build_toy("gan", seed=0)
    ctx = _context(task)
    cls, extra = (GanRandomEdits, {}) if which == "gan-random" else (
        GanTargetedEdits, {"max_datapoints": 200, "dissect_samples": 64, "max_tries": 3})

    def spans(ids, images):  # a stand-in reader: pairs of odd id name no word
        out = torch.stack([ids.float() / 100, ids.float() / 100 + 0.1], 1)
        out[ids % 2 == 1] = float("nan")
        return out

    task.resources["edit_word_spans"] = spans
    plain = cls(cls.Options(edit_fraction=0.5, **extra), seed=2, task=task)
    local = cls(cls.Options(edit_fraction=0.5, localize="word", **extra), seed=2, task=task)
    a, b = plain.generate(ctx)[0], local.generate(ctx)[0]
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.valid, b.valid) and "anchor_span" not in a.meta
    span, edited, ids = b.meta["anchor_span"], b.valid[:, 0], ctx.batch.ids
    assert span.shape == (len(ids), 1, 2)
    for k in edited.nonzero().flatten().tolist():
        i = int(ids[k])
        expected = [0.0, 1.0] if i % 2 else [i / 100, i / 100 + 0.1]
        assert span[k, 0].tolist() == pytest.approx(expected)
    assert local.last_stats["localized"] == pytest.approx(float((ids[edited] % 2 == 0).float().mean()))
    only = cls(cls.Options(edit_fraction=0.5, localize="word-only", **extra), seed=2, task=task).generate(ctx)[0]
    assert torch.equal(only.inputs, b.inputs) and torch.equal(only.meta["anchor_span"], span)
    assert torch.equal(only.valid[:, 0], edited & (ids % 2 == 0)) and bool(only.valid.any())  # wordless edits dropped
    del task.resources["edit_word_spans"]
    with pytest.raises(PluginError, match="edit_word_spans.*localize = 'none'"):
        cls(cls.Options(localize="word", **extra), seed=2, task=task).generate(ctx)


def test_keep_changes_refuses_a_change_the_task_does_not_read_and_a_task_without_the_reader():
    from negmine.errors import PluginError

    task = build_toy("gan", seed=0)
    ctx = _context(task)
    task.resources["edit_changes"] = lambda ids, images: [frozenset() for _ in ids]
    task.resources["edit_change_kinds"] = ("shape", "color")
    with pytest.raises(PluginError, match="'colr' \\(did you mean 'color'\\?\\); 'shap' \\(did you mean 'shape'"):
        GanRandomEdits(GanRandomEdits.Options(keep_changes="shap,colr"), seed=2, task=task).generate(ctx)
    del task.resources["edit_changes"], task.resources["edit_change_kinds"]
    with pytest.raises(PluginError, match="edit_changes.*keep_changes = ''"):
        GanRandomEdits(GanRandomEdits.Options(keep_changes="shape"), seed=2, task=task).generate(ctx)


def test_edits_export_starts_at_the_warm_start_level_the_run_reached(tmp_path, capsys):
    """A run with warm_start edits from the escalation level it settled at; its export must too (it edited from
    level 0 for gan-random, so its edits were weaker than the ones the model trained on)."""
    import json

    from negmine import checkpoint as ckpt
    from negmine.cli import main

    run = tmp_path / "run"
    assert main(["train", "--task", "toy", "--profile", "gan", "-n", "random", "-n", "gan-random", "--steps", "4",
                 "--gan-random-warm-start", "1.0", "--gan-random-accept", "5.0", "--gan-random-max-tries", "6",
                 "--eval-size", "20", "--run-dir", str(run), "-q"]) == 0
    level = int(ckpt.load(run / "checkpoints" / "stage-main.pt")["generators"]["gan-random"]["start_level"])
    assert level > 0  # an unreachable threshold: the controller climbed
    out = tmp_path / "edits"
    assert main(["edits", "export", str(run), "--out", str(out), "--n", "3", "--generator", "gan-random",
                 "--checkpoint", "stage-main"]) == 0, capsys.readouterr().err
    assert json.loads((out / "edits.json").read_text())["start_level"] == level
    rows = [json.loads(line) for line in (out / "edits.jsonl").read_text().splitlines()]
    assert rows and all(r["level"] >= level for r in rows)
