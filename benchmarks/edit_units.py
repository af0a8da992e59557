"""Which GAN units the targeted edits ablate, and what that does to the objects (Audio CLEVRGAN's factored generator).

Usage::

    python benchmarks/edit_units.py --export DIR [...] [--checkpoint RUN/checkpoints/stage-main.pt ...]
        [--gan data/audio-clevrgan/gan.pt] [--out benchmarks/results/edit_units.md]

The committed generator is attribute-factored (``audio_clevrgan.scene_gan.FactoredPainter``): of its ``layer4``
units, the first draw every object's geometry ("shared") and the others come in groups of one attribute value each
(cube, cylinder, the colours but gray, metal), so an edit's units can be read by role. For each export of
``negmine edits export`` (its ``edits.jsonl``, with the segmenter's readings):

- edits, the share in which the segmenter reads a change, and a change of one attribute of one object;
- the changes read, by kind (an edit can change several);
- the share of the edited units (ablated or inserted) that draw geometry (the layer's share of such units, for scale);
- the share of edits whose objects lose more than a fifth of their pixels (the edit shrank or removed geometry), and
  the share whose objects gain more than a quarter (the same ratio the other way: an inserted value drew more);
- the shape changes read, by direction (old→new).

For each checkpoint holding gan-targeted's model concepts: the clusters kept and the roles of each cluster's top
8 units (a value group is 8 units wide): how often the dissection ranks geometry first.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import torch


def unit_roles(gan_path: Path) -> list[str]:
    from audio_clevrgan.scene_gan import factored_unit_roles
    from audio_clevrgan.train_scripts import load_gan

    gan = load_gan(gan_path)
    channels = int(gan.features(torch.zeros(1, gan.z_dim)).shape[1])
    return factored_unit_roles(channels, gan.layer1.units)


def export_row(directory: Path, roles: list[str]) -> dict:
    summary = json.loads((directory / "edits.json").read_text())
    rows = [json.loads(line) for line in (directory / "edits.jsonl").read_text().splitlines() if line.strip()]
    units = collections.Counter(roles[u] for r in rows for u in r["units"])
    before = [sum(o["pixels"] for o in r["objects_original"]) for r in rows]
    after = [sum(o["pixels"] for o in r["objects_edited"]) for r in rows]
    shrunk = [a < 0.8 * b for a, b in zip(after, before, strict=True)]
    grown = [a > 1.25 * b for a, b in zip(after, before, strict=True)]  # the same ratio the other way
    ways = collections.Counter(f"{c['old']}→{c['new']}" for r in rows for c in r["detected_change"]["changes"]
                               if c.get("attribute") == "shape")
    concepts = (summary.get("options") or {}).get("concepts", "model")
    return {"export": str(directory), "concepts": concepts, "edits": len(rows), "changed": summary["changed"],
            "single": summary["single_attribute"], "kinds": summary["changed_attributes"],
            "geometry_units": units["shared"] / max(1, sum(units.values())), "shrunk": sum(shrunk) / max(1, len(rows)),
            "grown": sum(grown) / max(1, len(rows)), "ways": ways,
            "edited": summary.get("concepts_edited")}


def checkpoint_rows(path: Path, roles: list[str]) -> list[str]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    saved = (state.get("generators") or {}).get("gan-targeted") or {}
    if "concepts" not in saved:
        return [f"| {path} | no model concepts saved | | |"]
    ranking = saved["concepts"]["ranking"]
    out = []
    for k in range(ranking.shape[0]):
        top = collections.Counter(roles[u] for u in ranking[k, :8].tolist())
        out.append(f"| {path} (step {saved['concepts'].get('step')}) | {k} | {top['shared']} of 8 | "
                   + ", ".join(f"{r} {n}" for r, n in top.most_common()) + " |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", nargs="*", type=Path, default=[])
    parser.add_argument("--checkpoint", nargs="*", type=Path, default=[])
    parser.add_argument("--gan", type=Path, default=Path("data/audio-clevrgan/gan.pt"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    roles = unit_roles(args.gan)
    layer_share = roles.count("shared") / len(roles)
    lines = [f"The layer: {len(roles)} units, {roles.count('shared')} of them geometry ({100 * layer_share:.1f}%).",
             "", "| export | concepts | edits | change read | one attribute of one object | changes read | "
             "edited units drawing geometry | edits shrinking objects by > 1/5 | growing them by > 1/4 | "
             "shape changes read |", "|---|---|---|---|---|---|---|---|---|---|"]
    for directory in args.export:
        r = export_row(directory, roles)
        kinds = ", ".join(f"{k} {v}" for k, v in r["kinds"].items() if v)
        lines.append(f"| {r['export']} | {r['concepts']} | {r['edits']} | {100 * r['changed']:.1f}% | "
                     f"{100 * r['single']:.1f}% | {kinds} | {100 * r['geometry_units']:.1f}% | "
                     f"{100 * r['shrunk']:.1f}% | {100 * r['grown']:.1f}% | "
                     + ", ".join(f"{w} {n}" for w, n in r["ways"].most_common()) + " |")
    if args.checkpoint:
        lines += ["", "| checkpoint | cluster | top-8 units drawing geometry | roles of the top 8 |", "|---|---|---|---|"]
        for path in args.checkpoint:
            lines += checkpoint_rows(path, roles)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
