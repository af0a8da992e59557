"""What each GAN-drawn oracle row's edits change: the share of edits per attribute and per value changed.

For every method of an experiment file whose stages use ``gan-scene-edit``, the generator is built with that
method's options and draws one edit for each of the first ``--n`` training latents' scenes (the scene the GAN is
meant to draw, ``scene_from_z``), through the generator's own draw (``_edit``, with the GAN's placement rules), as a
sentence anchor would get it (an isolated-word anchor's edit removes its word instead and is not counted here).
Prints one row per method: the share of anchors left without an edit and the share of edits that change each
attribute and each value (the value the object had)::

    PYTHONPATH=examples python benchmarks/edit_shares.py \
        examples/audio_clevrgan/experiments/scene-iso05-excl-cpu.toml --data data/audio-clevrgan --n 3000 \
        --options '{"attributes": "shape", "values": "cube:3"}'

Why: option weights (``attributes = "shape:6,color:1,size:1"``, ``values = "cube:2"``) set draw odds, not
shares; an attribute with no valid edit passes its turn, and values differ in how many objects carry them, so the
shares a row trains on are measured here rather than read off its options.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from audio_clevrgan.captions import ATTRIBUTE_VALUES  # noqa: E402
from audio_clevrgan.oracle import GanSceneEdits  # noqa: E402
from audio_clevrgan.render import SCENE_PROFILES, SceneConfig  # noqa: E402
from audio_clevrgan.scene_gan import scene_from_z  # noqa: E402
from audio_clevrgan.vocab import ATTRIBUTES  # noqa: E402
from negmine.experiment import load_experiment  # noqa: E402


def edit_options(method) -> list[dict]:
    """The ``gan-scene-edit`` options of each stage of ``method`` that uses it."""
    return [dict(stage.get("generators", {}).get("gan-scene-edit", {})) for stage in method.stages
            if "gan-scene-edit" in stage.get("negatives", ())]


def shares(options: dict, scenes, cfg: SceneConfig = SCENE_PROFILES["cpu"], seed: int = 0
           ) -> tuple[float, Counter, Counter]:
    """(share of scenes without an edit, edits per attribute, edits per (attribute, old value)), under the
    placement rules ``cfg`` (the GAN's scene profile)."""
    gen = GanSceneEdits(GanSceneEdits.Options(**options), seed=seed)
    rng = np.random.default_rng(seed)
    by_attribute, by_value, none = Counter(), Counter(), 0
    for scene in scenes:
        new, index = gen._edit(scene, rng, cfg, None)
        if index < 0:
            none += 1
            continue
        changed = [i for i, (a, b) in enumerate(zip(scene, new, strict=True)) if a != b]
        attribute = ATTRIBUTES[index]
        by_attribute[attribute] += 1
        by_value[(attribute, getattr(scene[changed[0]], attribute))] += 1
    return none / len(scenes), by_attribute, by_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path)
    parser.add_argument("--data", type=Path, default=Path("data/audio-clevrgan"))
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--method", action="append", help="only these methods (default: every gan-scene-edit row)")
    parser.add_argument("--options", action="append", default=[], metavar="JSON",
                        help="an extra row: gan-scene-edit options not in the file, e.g. "
                             "'{\"attributes\": \"shape\", \"values\": \"cube:3\"}'")
    args = parser.parse_args()

    manifest = [json.loads(line) for line in (args.data / "manifest.jsonl").read_text().splitlines()]
    latents = np.load(args.data / "latents.npy")
    train = [r["latent_row"] for r in manifest if r["split"] == "train"][: args.n]
    # the dataset's GAN names its scene profile; its scenes and the generator's placement checks both use it
    cfg = SCENE_PROFILES[torch.load(args.data / "gan.pt", map_location="cpu", weights_only=False)["config"]
                         ["scene_profile"]]
    scenes = [scene_from_z(latents[i], cfg) for i in train]

    exp = load_experiment(args.experiment)
    values = [(a, v) for a in ("shape", "color", "size", "material") for v in ATTRIBUTE_VALUES[a]]
    print(f"{len(scenes)} training scenes of {args.data} (the first in the manifest), one edit each; % of edits "
          f"(no edit: % of scenes)\n")
    print("| method | options | no edit | " + " | ".join(ATTRIBUTES) + " | "
          + " | ".join(v for _, v in values) + " |")
    print("|---|---|---|" + "---|" * (len(ATTRIBUTES) + len(values)))
    table = [(m.name, options) for m in exp.methods if not args.method or m.name in args.method
             for options in edit_options(m)]
    table += [("(--options)", json.loads(text)) for text in args.options]
    for name, options in table:
        none, by_attribute, by_value = shares(options, scenes, cfg)
        n = max(1, sum(by_attribute.values()))
        cells = [f"{100 * by_attribute[a] / n:.1f}" for a in ATTRIBUTES]
        cells += [f"{100 * by_value[(a, v)] / n:.1f}" if by_value[(a, v)] else "-" for a, v in values]
        opts = ", ".join(f"{k}={v}" for k, v in sorted(options.items())) or "defaults"
        print(f"| {name} | {opts} | {100 * none:.1f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
