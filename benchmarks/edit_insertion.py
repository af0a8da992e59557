"""Can the GAN draw a shape edit *away from* the default value: insert a shape's units instead of ablating them?

Usage::

    python benchmarks/edit_insertion.py [--data data/audio-clevrgan] [--n 64] [--dissect 300]
        [--factors 1,2,4,8,12] [--out benchmarks/results/edit_insertion.md]

``gan-targeted`` with ``concepts = "task"`` can only ablate a value's units, so every shape edit of the committed
factored generator turns a cube or a cylinder into a sphere (the default value, which no unit draws): spheres are
never edited, and every edit goes the same way. This pilot asks whether inserting a value's units (GAN Dissection's
insertion: ``h <- h (1 - a) + v a`` with ``v`` a level per unit) draws the other direction. It dissects ``layer4``
against the segmenter's value maps as the generator does (``compute_task_concepts``, ``--dissect`` samples), draws
``--n`` GAN samples, and on the layer cells the segmenter reads as a given shape:

- *ablation* (the baseline, what training uses): the cube or cylinder units set to 0 on the cube's or cylinder's
  cells;
- *insertion*: the cube or cylinder units set to ``factor`` x their dissection threshold on the sphere's cells;
- *swap* (``gan-targeted``'s ``insert``): on a cube's cells the cube units ablated and the cylinder units inserted,
  and the other way (factors of 4 and more).

For each, over the images holding a source cell: the share whose objects the segmenter reads with some object
changed to the target shape, the share where that is the only change, and the share with no change read. Every
cell of the source value is edited (not one salient region), so this bounds what a region-wise edit could do.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "plugins")]


def tally(before: list, after: list, rows: list[int], target: str) -> dict[str, float]:
    """Shares (in %) of the images ``rows`` whose edit the segmenter reads as: some object now ``target`` in shape;
    that as the only change; no change at all."""
    from negmine_gan.export import describe_change

    hit = only = nothing = 0
    for i in rows:
        change = describe_change(before[i], after[i])
        to_target = any(c.get("attribute") == "shape" and c.get("new") == target for c in change["changes"])
        hit += to_target
        only += to_target and change["single_attribute"]
        nothing += not change["changed"]
    n = max(1, len(rows))
    return {"to target": 100 * hit / n, "only change": 100 * only / n, "no change": 100 * nothing / n}


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/audio-clevrgan")
    parser.add_argument("--n", type=int, default=64, help="GAN samples edited")
    parser.add_argument("--dissect", type=int, default=300, help="GAN samples for the dissection")
    parser.add_argument("--factors", default="1,2,4,8,12", help="inserted level: factor x each unit's threshold")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    from audio_clevrgan.dataset import concept_maps, describe_images
    from audio_clevrgan.train_scripts import load_gan, load_segmenter
    from negmine_gan.base import to_model_input
    from negmine_gan.concepts import compute_task_concepts
    from negmine_gan.edit import GanEditor

    root = Path(args.data)
    started = time.time()
    editor = GanEditor(load_gan(root / "gan.pt"), "layer4")
    segmenter = load_segmenter(root / "segmenter.pt")

    def describe(images01: torch.Tensor) -> list:
        return describe_images(segmenter, images01)[0]

    def maps(images01: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        return concept_maps(segmenter, images01)

    z_dim = int(editor.gan.z_dim)
    concepts = compute_task_concepts(editor, to_model_input, maps, n_dissect=args.dissect, seed=0,
                                     device=torch.device("cpu"), z_dim=z_dim)
    z = torch.randn(args.n, z_dim, generator=torch.Generator().manual_seed(1))
    h = editor.features(z)  # Float[N, C, h, w]
    images = to_model_input(editor.generate(z, features=h))
    before = describe(images)
    names, value_maps = maps(images)
    cells = {v: torch.nn.functional.adaptive_avg_pool2d(value_maps[:, names.index(v)].float(), h.shape[-2:]) >= 0.5
             for v in ("cube", "cylinder", "sphere")}  # Bool[N, h, w]: the layer cells holding each shape

    def edit(units: torch.Tensor, where: torch.Tensor, level: torch.Tensor | None,
             ablated: torch.Tensor | None = None) -> list:
        """Set ``units`` to ``level`` (None: 0) on the cells ``where``, and ``ablated`` (more units) to 0 there."""
        a, v = torch.zeros_like(h), torch.zeros_like(h)
        for group in (units, ablated):
            if group is not None:
                a[:, group] = where[:, None].float().expand(-1, len(group), -1, -1)
        if level is not None:
            v[:, units] = level[None, :, None, None].expand(h.shape[0], -1, *h.shape[-2:])
        return describe(to_model_input(editor.generate(z, ablation=a, replacement=v, features=h)))

    def specific(shape: str) -> torch.Tensor:
        k = concepts.names.index(shape)
        return concepts.ranking[k, : int(concepts.sizes[k])]

    lines = []
    for shape in ("cube", "cylinder"):
        k = concepts.names.index(shape)
        units = concepts.ranking[k, : int(concepts.sizes[k])]
        rows = cells[shape].flatten(1).any(1).nonzero().flatten().tolist()
        lines.append((f"ablate {shape} units on {shape} cells (training's edit)", "sphere", len(rows),
                      tally(before, edit(units, cells[shape], None), rows, "sphere")))
        rows = cells["sphere"].flatten(1).any(1).nonzero().flatten().tolist()
        for factor in (float(f) for f in args.factors.split(",")):
            after = edit(units, cells["sphere"], concepts.thresholds[units] * factor)
            lines.append((f"insert {shape} units x{factor:g} on sphere cells", shape, len(rows),
                          tally(before, after, rows, shape)))
    # a swap between two drawn values (gan-targeted's insert): the source's units ablated, the target's inserted
    for source, shape in (("cylinder", "cube"), ("cube", "cylinder")):
        units = specific(shape)
        rows = cells[source].flatten(1).any(1).nonzero().flatten().tolist()
        for factor in (float(f) for f in args.factors.split(",") if float(f) >= 4):
            after = edit(units, cells[source], concepts.thresholds[units] * factor, ablated=specific(source))
            lines.append((f"swap on {source} cells: ablate {source}, insert {shape} units x{factor:g}", shape,
                          len(rows), tally(before, after, rows, shape)))
    from negmine.experiment import machine_record

    commit = machine_record()['commit']
    out = [f"- command: `python benchmarks/edit_insertion.py --data {args.data} --n {args.n} --dissect {args.dissect}"
           f" --factors {args.factors}`",
           f"- commit {commit}; {platform.machine()}, CPU, {torch.get_num_threads()} thread(s), torch "
           f"{torch.__version__}; {time.time() - started:.0f} s",
           "- units per concept (dissection): " + ", ".join(f"{n} {int(s)}" for n, s in
                                                              zip(concepts.names, concepts.sizes, strict=True)),
           "", "| edit | target shape | images | to target (%) | only change (%) | no change (%) |",
           "|---|---|---|---|---|---|"]
    out += [f"| {name} | {target} | {n} | {t['to target']:.1f} | {t['only change']:.1f} | {t['no change']:.1f} |"
            for name, target, n, t in lines]
    text = "\n".join(out)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
