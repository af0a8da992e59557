"""``negmine edits export``: write GAN-edited negatives of a trained run to disk, for inspection or reuse elsewhere.

Format (one directory)::

    edits.json          format version, provenance (run directory, checkpoint name, path and step, split, export
                        seed, task, profile and task options, generator and its options with where they came from,
                        where the concepts came from, the GAN's SHA-256, negmine's version and commit), layer,
                        counts
    edits.jsonl         one edit per line: id (the pair's index in the split), latent (list of floats), original, edited, region (file
                        names), region_cells ([row, col] on the layer grid), units (indices), levels (the value each
                        of those units was set to inside the region: 0 ablated, above 0 inserted), cluster (or null),
                        concept (the concept's name with gan-targeted's concepts = "task", else null; the value
                        ablated), inserted (the concept inserted by a swap edit, gan-targeted's insert > 0, else null),
                        tries (made for this edit), level (the escalation level that was accepted: 0 is the
                        schedule's first), change_ratio, score_original, score_edited, change_inside / change_outside (mean
                        absolute pixel change in [0, 1] inside and outside the region), and, when the task can
                        describe images, objects_original / objects_edited / detected_change; with gan-targeted's
                        matched_positive, matched_positive (file name, or null where the edit has none),
                        matched_units / matched_levels (the units redrawn on the region and the value each was set
                        to) and score_matched, with a describer objects_matched / matched_change
    NNNNNN-original.png, NNNNNN-edited.png, NNNNNN-region.png, NNNNNN-matched.png (look-matched positives)
    gallery.png         the first 16 edits: original, edit, region, what changed

The latents, unit indices and levels are enough to regenerate any edit with :class:`negmine_gan.edit.GanEditor`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from negmine.errors import NegmineError

FORMAT_VERSION = 1


def task_concepts_of(gen: Any) -> Any:
    """The task concepts ``gen`` edits with (gan-targeted with concepts = "task"), else None."""
    if getattr(getattr(gen, "options", None), "concepts", "model") != "task":
        return None
    return getattr(gen, "task_concepts", None)


def concept_name(gen: Any, negs: Any, k: int, key: str = "cluster") -> str | None:
    """The name of the task concept edited for item ``k`` (gan-targeted with concepts = "task"; ``key`` "cluster":
    the concept ablated, "inserted": the one inserted by a swap edit), else None."""
    concepts = task_concepts_of(gen)
    if concepts is None or key not in negs.meta:
        return None
    index = int(negs.meta[key][k, 0])
    return concepts.names[index] if 0 <= index < len(concepts.names) else None


def _png(path: Path, image01: torch.Tensor) -> None:
    from PIL import Image

    arr = (image01.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr).save(path, format="PNG")


def images_for_png(task: Any, images: torch.Tensor) -> torch.Tensor:
    """Model inputs Float[B, 3, H, W] -> Float[B, 3, H, W] in [0, 1] for PNGs and pixel-change figures.

    ``task.resources["input_to_image"]`` (a callable) does it for a task whose side-a inputs are not images in
    [0, 1] (e.g. normalised with a mean and std); without it the inputs must already lie in [0, 1], else a
    NegmineError says what to give (clamping them would write wrong pictures and wrong change figures)."""
    fn = (getattr(task, "resources", None) or {}).get("input_to_image")
    if fn is not None:
        return fn(images)
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise NegmineError(
            f"edits export: the task's side-a inputs span [{lo:.3g}, {hi:.3g}], not images in [0, 1]; give the task "
            "resources['input_to_image'] = a function from model inputs Float[B, 3, H, W] to images in [0, 1] (the "
            "inverse of its gan_to_input's normalisation)")
    return images


def matched_positives(task: Any, gen: Any, model: Any, negs: Any, audio: Any) -> dict[str, torch.Tensor] | None:
    """The look-matched positives of a batch's edits (gan-targeted's ``matched_positive``), else None:
    ``shown`` Float[B, 3, H, W] in [0, 1] (for PNGs), ``score`` Float[B] (the model's score of each anchor's caption
    with its matched positive; 0 where it has none) and ``levels`` Float[C] (the value a redrawn unit is set to,
    ``GanTargetedEdits.matched_levels``)."""
    if negs.meta.get("matched_positive") is None:
        return None
    inputs, matched = negs.meta["matched_positive"][:, 0], negs.meta["matched"][:, 0]
    score = torch.zeros(inputs.shape[0])
    if bool(matched.any()):
        rows = matched.nonzero().squeeze(1)
        score[rows] = model.score_pairs(model.encode(0, inputs[rows]), audio[rows]).float().cpu()
    levels = gen.matched_levels().cpu()
    return {"shown": images_for_png(task, inputs), "score": score, "levels": levels}


def _region_png(path: Path, region: torch.Tensor, size: int) -> None:
    from PIL import Image

    up = np.kron(region.cpu().numpy().astype(np.uint8) * 255, np.ones((size // region.shape[0], size // region.shape[1]),
                                                                      dtype=np.uint8))
    Image.fromarray(up).save(path, format="PNG")


def describe_change(before: list[dict], after: list[dict]) -> dict[str, Any]:
    """Compare two object lists (dicts with shape, color, material, size, x, y): which attributes of which objects
    changed (objects matched by nearest position), and whether objects appeared or vanished."""
    attributes = ("shape", "color", "material", "size")
    changes, used = [], set()
    for i, o in enumerate(before):
        best, dist = None, 1e9
        for j, p in enumerate(after):
            d = (o["x"] - p["x"]) ** 2 + (o["y"] - p["y"]) ** 2
            if j not in used and d < dist:
                best, dist = j, d
        if best is None or dist > 0.01:
            changes.append({"object": i, "change": "removed"})
            continue
        used.add(best)
        for a in attributes:
            if o[a] != after[best][a]:
                changes.append({"object": i, "attribute": a, "old": o[a], "new": after[best][a]})
    for j in range(len(after)):
        if j not in used:
            changes.append({"object": None, "change": "added"})
    single = len(changes) == 1 and "attribute" in changes[0]
    return {"changed": bool(changes), "single_attribute": single, "changes": changes}


def pixel_change(original: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Mean absolute pixel change (images Float[3, H, W] in [0, 1]) inside and outside the region mask Bool[H, W]:
    how much an edit leaks out of the spot it was meant to change."""
    diff = (edited - original).abs().mean(0)
    inside = float(diff[mask].mean()) if mask.any() else 0.0
    outside = float(diff[~mask].mean()) if (~mask).any() else 0.0
    return {"change_inside": round(inside, 5), "change_outside": round(outside, 5)}


def changed_attribute_counts(changes: list[dict[str, Any]]) -> dict[str, int]:
    """How many edits changed each attribute of some object, removed an object or added one (an edit may count in
    several), and how many changed nothing the segmenter can see."""
    counts = {k: 0 for k in ("shape", "color", "material", "size", "removed", "added", "nothing")}
    for c in changes:
        kinds = {ch.get("attribute") or ch["change"] for ch in c["changes"]}
        for kind in kinds:
            counts[kind] += 1
        counts["nothing"] += int(not c["changed"])
    return counts


def write_gallery(out: Path, rows: list[dict[str, Any]]) -> str:
    """``gallery.png``: per edit the original, the edit and the region (paper figures 3, 5, 6), with what the
    segmenter saw change."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    cols = 4
    rows_n = (len(rows) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, 3 * cols, figsize=(1.6 * 3 * cols, 1.9 * rows_n), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, row in enumerate(rows):
        r, c = divmod(i, cols)
        original = np.asarray(Image.open(out / row["original"]))
        edited = np.asarray(Image.open(out / row["edited"]))
        region = np.asarray(Image.open(out / row["region"])) > 0
        overlay = original.copy()
        overlay[region] = (0.5 * overlay[region] + 0.5 * np.array([255, 0, 0])).astype(np.uint8)
        change = row.get("detected_change")
        label = "" if change is None else ", ".join(
            ch.get("attribute", ch.get("change", "")) for ch in change["changes"]) or "no change seen"
        for k, (img, title) in enumerate(((original, f"#{row['id']}"), (edited, f"tries {row['tries']}"),
                                          (overlay, label[:22]))):
            axes[r, 3 * c + k].imshow(img)
            axes[r, 3 * c + k].set_title(title, fontsize=7)
    described = any("detected_change" in row for row in rows)  # only a task with a describer says what changed
    fig.suptitle("original | edited | edited region (red)"
                 + (", with the attributes the segmenter saw change" if described else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "gallery.png", dpi=110)
    plt.close(fig)
    return "gallery.png"


def run_generator_options(config: dict[str, Any], generator: str) -> tuple[dict[str, Any], str]:
    """The options a run trained ``generator`` with (its config.json): those of the last stage that used it, else
    the run's top-level ``generators`` table; and where they came from, for ``edits.json``."""
    for stage in reversed(config.get("stages") or []):
        if generator in (stage.get("negatives") or ()):
            return dict((stage.get("generators") or {}).get(generator) or {}), f"the run's stage {stage.get('name')!r}"
    top = dict((config.get("generators") or {}).get(generator) or {})
    return top, ("the run's generators table" if top else "defaults (the run did not use this generator)")


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    return Path(checkpoint) if checkpoint.endswith(".pt") else run_dir / "checkpoints" / f"{checkpoint}.pt"


def gan_digest(task: Any, gan: Any) -> str:
    """SHA-256 of the GAN's file (``resources["gan_path"]``), else of its weights (every tensor of its state dict,
    in order): which generator drew the edits."""
    import hashlib

    path = (task.resources or {}).get("gan_path")
    digest = hashlib.sha256()
    if path is not None and Path(path).is_file():
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return "file:" + digest.hexdigest()
    for name, tensor in gan.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return "weights:" + digest.hexdigest()


def _negmine_version() -> str:
    import negmine

    return negmine.__version__


def _negmine_commit() -> str:
    """The git commit of the negmine source tree this runs from ("unknown" outside a checkout)."""
    import subprocess

    import negmine

    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=Path(negmine.__file__).parent, text=True,
                                       stderr=subprocess.DEVNULL, timeout=10).strip()
    except Exception:
        return "unknown"


@torch.no_grad()
def export_edits(pm: Any, run_dir: Path, out: Path, generator: str, n: int, split: str = "test",
                 options: dict[str, Any] | None = None, checkpoint: str = "best", device: str = "cpu",
                 batch_size: int = 32, seed: int = 0, task_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Edit the first ``n`` pairs of ``split`` with a trained run's model and write them to ``out``
    (``task_options`` override the run's, e.g. its ``data_dir``)."""
    from negmine.config import check_generator_options, make_options
    from negmine.errors import ConfigError
    from negmine.evaluate import load_run
    from negmine.generator import MiningContext
    from negmine_gan.base import gan_to_input
    from negmine_gan.edit import upsample_mask

    task, config, state = load_run(pm, run_dir, checkpoint, device, task_options)
    cls = pm.generator(generator)
    cls.check_requirements(task)
    run_options, options_from = run_generator_options(config, generator)
    merged = {**run_options, **(options or {})}  # flags override the run's
    problems: list[str] = []
    check_generator_options("", generator, merged, {generator: cls}, problems)
    if problems:
        raise ConfigError(problems, source="edits export options")
    gen = cls(make_options(cls, merged), seed=seed, task=task)  # reads task resources when it edits, not before
    data = {"train": task.train, "val": task.val, "test": task.test}[split]
    if split != "train" and callable(task.resources.get("split_resources")):
        # the task's readers of edits (drop_still_true, keep_changes, localize) take ids of the training split;
        # edits of held-out pairs must be read against those pairs' captions
        task.resources.update(task.resources["split_resources"](split))
    elif split != "train":
        reading = [(k, off) for k, off in (("drop_still_true", "false"), ("keep_changes", "''"), ("localize", "none"),
                                           ("matched_positive", "false"))
                   if getattr(gen.options, k, None) not in (None, False, "", "none")]
        if reading:
            raise ConfigError([f"generator option {k} asks the task about each edit, but task {task.name!r} reads "
                               f"only training pairs (it gives no resources['split_resources']): export --split "
                               f"train, or --option {k}={off}" for k, off in reading], source="edits export options")
    model = task.model.eval()
    saved = (state.get("generators") or {}).get(generator)
    concepts_from = None
    if saved is not None and hasattr(gen, "refresh") and ("concepts" in saved or "task_concepts" in saved):
        gen.load_state_dict(saved)  # the concepts the run trained with at this checkpoint
        gen.rng.manual_seed(seed)  # ... and the export's own draws
        concepts_from = "checkpoint"
    elif hasattr(gen, "refresh"):
        gen.refresh(model, task.train, torch.device(device), 0)
        concepts_from = "recomputed (the checkpoint holds none of this generator)"
    if saved is not None and "start_level" in saved and getattr(gen.options, "warm_start", 0.0) > 0:
        gen.start_level = int(saved["start_level"])  # the warm-start level the run reached: edits as in training
    start_level = int(getattr(gen, "start_level", 0))  # the export's batches move it on as training would
    describe = task.resources.get("describe_images")
    editor = gen._editor()
    to_input = gan_to_input(task)
    out.mkdir(parents=True, exist_ok=True)
    rows, n = [], min(n, len(data))
    for start in range(0, n, batch_size):
        ids = torch.arange(start, min(n, start + batch_size))
        batch = data.batch(ids).to(device)
        originals = to_input(editor.generate(batch.extras["latent"]))
        batch = type(batch)(originals, batch.b, batch.ids, batch.groups, batch.extras)
        image, audio = model.encode(0, batch.a), model.encode(1, batch.b)
        scores = model.score_matrix(image, audio)
        ctx = MiningContext(batch, (image, audio), (image, audio), (scores.T, scores), torch.arange(len(ids)),
                            torch.eye(len(ids), dtype=torch.bool), batch.ids, model, task, 0, config["margin"],
                            torch.device(device))
        negs = gen.generate(ctx)[0]
        edited = negs.inputs[:, 0]
        matched = matched_positives(task, gen, model, negs, audio)
        matched_seen = {}  # item -> objects the segmenter reads in its matched positive (one pass per batch)
        if describe and matched is not None and bool(negs.meta["matched"][:, 0].any()):
            rows_matched = negs.meta["matched"][:, 0].nonzero().squeeze(1)
            seen = describe(negs.meta["matched_positive"][rows_matched.to(negs.meta["matched_positive"].device), 0])
            matched_seen = dict(zip(rows_matched.tolist(), seen, strict=True))
        before = describe(originals) if describe else None
        after = describe(edited) if describe else None
        shown_original, shown_edited = images_for_png(task, originals), images_for_png(task, edited)
        for k, index in enumerate(ids.tolist()):
            if not bool(negs.valid[k, 0]):  # not edited this batch (options.edit_fraction < 1)
                continue
            stem = f"{index:06d}"
            _png(out / f"{stem}-original.png", shown_original[k])
            _png(out / f"{stem}-edited.png", shown_edited[k])
            region = negs.meta["region"][k, 0]
            _region_png(out / f"{stem}-region.png", region, originals.shape[-1])
            row = {
                "id": index,
                "latent": [round(float(v), 6) for v in batch.extras["latent"][k].tolist()],
                "original": f"{stem}-original.png",
                "edited": f"{stem}-edited.png",
                "region": f"{stem}-region.png",
                "region_cells": region.nonzero().tolist(),
                "units": (units := negs.meta["units"][k, 0].nonzero().flatten()).tolist(),
                "levels": ([round(float(v), 5) for v in negs.meta["levels"][k, 0][units].tolist()]
                           if "levels" in negs.meta else [0.0] * len(units)),
                "inserted": concept_name(gen, negs, k, "inserted"),
                # a steering swap (gan-targeted steer > 0): the move added to every channel of the region's cells
                "shift": ([round(float(v), 6) for v in shift.tolist()]
                          if "shift" in negs.meta and bool((shift := negs.meta["shift"][k, 0]).any()) else None),
                "cluster": int(negs.meta["cluster"][k, 0]) if "cluster" in negs.meta else None,
                "concept": concept_name(gen, negs, k),
                "tries": int(negs.meta["tries"][k, 0]),
                "level": int(negs.meta["level"][k, 0]),
                "change_ratio": round(float(negs.meta["change_ratio"][k, 0]), 5),
                "score_original": round(float(scores[k, k]), 5),
                "score_edited": round(float(negs.score[k, 0]), 5),
                **pixel_change(shown_original[k], shown_edited[k],
                               upsample_mask(region[None], originals.shape[-1])[0]),
            }
            if matched is not None:
                stem_matched = f"{stem}-matched.png" if bool(negs.meta["matched"][k, 0]) else None
                if stem_matched is not None:
                    _png(out / stem_matched, matched["shown"][k])
                # the swap's ablated units (those of its source value), redrawn as that value
                ablated = ([u for u, level in zip(row["units"], row["levels"], strict=True) if level == 0.0]
                           if stem_matched is not None else [])
                row.update(matched_positive=stem_matched, matched_units=ablated,
                           matched_levels=[round(float(matched["levels"][u]), 5) for u in ablated],
                           score_matched=(round(float(matched["score"][k]), 5) if stem_matched is not None else None))
                if k in matched_seen:  # what the redraw changed, as the segmenter reads it
                    row.update(objects_matched=matched_seen[k],
                               matched_change=describe_change(before[k], matched_seen[k]))
            if "anchor_span" in negs.meta:  # localize = "word": the part of the caption the edit falsifies
                row["anchor_span"] = [round(float(v), 5) for v in negs.meta["anchor_span"][k, 0].tolist()]
            if before is not None:
                row["objects_original"], row["objects_edited"] = before[k], after[k]
                row.update(detected_change=describe_change(before[k], after[k]))
            rows.append(row)
    with (out / "edits.jsonl").open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
    summary = {
        "format_version": FORMAT_VERSION,
        "run_dir": str(run_dir),
        "checkpoint": checkpoint,
        "checkpoint_path": str(checkpoint_path(run_dir, checkpoint)),
        "checkpoint_step": state.get("global_step"),
        "split": split,
        "seed": seed,
        "task": config.get("task"),
        "profile": config.get("profile"),
        "task_options": {**(config.get("task_options") or {}), **(task_options or {})},
        "generator": generator,
        "options": attrs.asdict(gen.options),
        "options_from": options_from + (f", overridden by {sorted(options)}" if options else ""),
        "concepts_from": concepts_from,
        "start_level": start_level,
        "gan_sha256": gan_digest(task, editor.gan),
        "negmine_version": _negmine_version(),
        "negmine_commit": _negmine_commit(),
        "layer": gen.options.layer,
        "count": len(rows),
        "tries_histogram": np.bincount([r["tries"] for r in rows]).tolist(),
    }
    if describe:
        summary["changed"] = float(np.mean([r["detected_change"]["changed"] for r in rows]))
        summary["single_attribute"] = float(np.mean([r["detected_change"]["single_attribute"] for r in rows]))
        summary["changed_attributes"] = changed_attribute_counts([r["detected_change"] for r in rows])
        levels = sorted({r["level"] for r in rows})
        summary["changed_by_level"] = {  # level of the accepted try -> how many edits, what fraction changed
            str(lv): {"edits": sum(r["level"] == lv for r in rows),
                      "changed": float(np.mean([r["detected_change"]["changed"] for r in rows if r["level"] == lv]))}
            for lv in levels}
    if (concepts := task_concepts_of(gen)) is not None:
        from collections import Counter

        summary["task_concepts"] = {"kept": list(concepts.names), "dropped": list(concepts.dropped)}
        summary["concepts_edited"] = dict(Counter(r["concept"] for r in rows if r["concept"]).most_common())
    if rows and "matched_positive" in rows[0]:
        summary["matched"] = float(np.mean([r["matched_positive"] is not None for r in rows]))
        read = [r["matched_change"] for r in rows if "matched_change" in r]
        if read:  # how far the redraws are from the original, by the segmenter: 0 changes is a clean positive
            summary["matched_changed"] = float(np.mean([c["changed"] for c in read]))
            summary["matched_changed_attributes"] = changed_attribute_counts(read)
    for key in ("change_inside", "change_outside"):
        summary[f"mean_{key}"] = float(np.mean([r[key] for r in rows]))
    summary["gallery"] = write_gallery(out, rows[:16])
    (out / "edits.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
