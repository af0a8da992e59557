"""The GAN's shape swaps beside perfect redraws of the very same change: what does a swap carry besides the shape?

Usage::

    negmine edits export RUN_DIR --checkpoint last --generator gan-targeted --n 200 --option edit_fraction=1 --out SWAPS
    python benchmarks/swap_redraws.py --swaps SWAPS --out PAIRS
    python benchmarks/edit_artefacts.py --edits PAIRS/swaps RUN ...     # and PAIRS/redraws, the same runs
    python benchmarks/edit_word_scores.py --edits PAIRS/swaps RUN[:CKPT] ...   # and PAIRS/redraws

SWAPS is an export of a scene-coded GAN's edits (``negmine edits export``, the Audio CLEVRGAN task). For every swap
the task's segmenter reads as exactly one object's shape changed (old -> new, no object added or removed), this
finds that object in the latent's own scene (the scene object of the old shape nearest the segmenter's object on
the image) and has the GAN draw the scene with that object's shape set to the new one and nothing else changed:
the oracle ``gan-scene-edit``'s kind of edit, aimed at the swap's object and shape. Both images are read by the
segmenter again; a pair is kept when the redraw too is read as that one change, so the two sets hold the same
changes of the same objects of the same scenes and differ only in how the change was drawn.

PAIRS gets two export directories in ``negmine edits export``'s format (``edits.json``, ``edits.jsonl``, PNGs), so
the edit benchmarks read either: ``swaps`` (the kept swaps, copied) and ``redraws`` (the GAN's drawing of the
original from its latent, as the export's originals are, and of the edited scene). It prints how many swaps were
read as a clean shape change, how many found their object and how many redraws were read as the same change, and
the mean pixel change of the two kinds of edit inside and outside the changed object's cells.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import torch


def clean_shape_change(edit: dict) -> dict | None:
    """The swap's one read change ``{"object", "attribute": "shape", "old", "new"}``, or None when the segmenter
    read anything else (no change, several, an object added or removed, another attribute)."""
    changes = (edit.get("detected_change") or {}).get("changes") or []
    if len(changes) != 1 or changes[0].get("attribute") != "shape":
        return None
    if len(edit["objects_edited"]) != len(edit["objects_original"]):
        return None
    return changes[0]


def match_object(scene: tuple, read: dict, camera: object, max_distance: float = 0.12) -> int | None:
    """Index of the scene object of shape ``read["shape"]`` whose screen centre is nearest the segmenter's object
    ``read`` (its ``x, y`` in image fractions), or None when none lies within ``max_distance``."""
    from audio_clevrgan.render import _disc

    best, dist = None, max_distance
    for k, o in enumerate(scene):
        if o.shape != read["shape"]:
            continue
        u, v, _, _ = _disc(o, camera)
        d = math.hypot(u - read["x"], v - read["y"])
        if d < dist:
            best, dist = k, d
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", required=True, type=Path, help="a `negmine edits export` directory")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--run", help="a run whose task and GAN to use (default: the export's run)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from audio_clevrgan.render import edit_scene
    from audio_clevrgan.scene_gan import encode_scenes
    from negmine.evaluate import load_run
    from negmine.experiment import machine_record
    from negmine.plugins import get_plugin_manager
    from negmine_gan.base import gan_to_input
    from negmine_gan.edit import resolve_gan
    from negmine_gan.export import _png, describe_change, images_for_png

    meta = json.loads((args.swaps / "edits.json").read_text())
    edits = [json.loads(line) for line in (args.swaps / "edits.jsonl").read_text().splitlines()]
    run = Path(args.run or meta["run_dir"])
    task, _, _ = load_run(get_plugin_manager(), run, "last", "cpu", meta.get("task_options"))
    gan = resolve_gan(task)
    describe = task.resources["describe_images"]
    to_input = gan_to_input(task)  # the GAN's images as model inputs, as the export and training make them
    cfg = gan.scene_config

    clean = [(e, c) for e in edits if (c := clean_shape_change(e)) is not None]
    found, kept = 0, []
    for e, c in clean:
        z = torch.tensor(e["latent"], dtype=torch.float32)[None]
        scene = gan.scenes(z)[0]
        k = match_object(scene, e["objects_original"][c["object"]], cfg.camera)
        if k is None:
            continue
        found += 1
        with torch.no_grad():
            codes = encode_scenes([scene, edit_scene(scene, k, "shape", c["new"])], cfg.max_objects)
            drawn = to_input(gan(codes=codes))  # model inputs of the original scene and the edited one
        shown = images_for_png(task, drawn)
        before, after = describe(drawn)
        read = describe_change(before, after)
        same = read["single_attribute"] and {k2: read["changes"][0].get(k2) for k2 in ("attribute", "old", "new")} \
            == {"attribute": "shape", "old": c["old"], "new": c["new"]}
        if same:
            kept.append((e, shown, before, after, read))

    swaps_dir, redraws_dir = args.out / "swaps", args.out / "redraws"
    for d in (swaps_dir, redraws_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    swap_rows, redraw_rows, change = [], [], {"swap": [0.0, 0.0], "redraw": [0.0, 0.0]}
    import numpy as np
    from PIL import Image

    for e, shown, before, after, read in kept:
        stem = f"{e['id']:06d}"
        for name in ("original", "edited"):
            shutil.copyfile(args.swaps / e[name], swaps_dir / f"{stem}-{name}.png")
        swap_rows.append({k: e[k] for k in ("id", "latent", "objects_original", "objects_edited", "detected_change")}
                         | {"original": f"{stem}-original.png", "edited": f"{stem}-edited.png"})
        _png(redraws_dir / f"{stem}-original.png", shown[0])
        _png(redraws_dir / f"{stem}-edited.png", shown[1])
        redraw_rows.append({"id": e["id"], "latent": e["latent"], "objects_original": before, "objects_edited": after,
                            "detected_change": read, "original": f"{stem}-original.png",
                            "edited": f"{stem}-edited.png"})
        # mean absolute pixel change, over the whole image and over the pixels either edit changes by > 0.1
        sw = [np.asarray(Image.open(swaps_dir / f"{stem}-{n}.png"), dtype=np.float32) / 255 for n in ("original", "edited")]
        rd = [np.asarray(Image.open(redraws_dir / f"{stem}-{n}.png"), dtype=np.float32) / 255 for n in ("original", "edited")]
        ds, dr = np.abs(sw[1] - sw[0]).mean(-1), np.abs(rd[1] - rd[0]).mean(-1)
        change["swap"][0] += float(ds.mean()) / len(kept)
        change["redraw"][0] += float(dr.mean()) / len(kept)
        change["swap"][1] += float((ds > 0.1).mean()) / len(kept)
        change["redraw"][1] += float((dr > 0.1).mean()) / len(kept)
    for d, rows, how in ((swaps_dir, swap_rows, "the GAN's swaps"), (redraws_dir, redraw_rows, "GAN redraws")):
        (d / "edits.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        (d / "edits.json").write_text(json.dumps({**meta, "edits": len(rows), "kind": how,
                                                  "made_by": "benchmarks/swap_redraws.py"}, indent=2) + "\n")
    print(f"swaps exported: {len(edits)}; read as one object's shape changed: {len(clean)}; object found in the "
          f"scene: {found}; redraw read as the same change: {len(kept)}")
    print("| edit | pairs | mean pixel change | share of pixels changed by > 0.1 |\n|---|---:|---:|---:|")
    for k in ("swap", "redraw"):
        print(f"| {k} | {len(kept)} | {change[k][0]:.4f} | {100 * change[k][1]:.2f}% |")
    here = machine_record()  # the commit (flagged when code differs from it) and the machine
    print(f"\nMachine: {here['machine']}; commit {here['commit']}")


if __name__ == "__main__":
    main()
