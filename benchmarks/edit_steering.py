"""Shape swaps by steering a cell's whole feature vector, against training's swaps by unit insertion.

Usage::

    python benchmarks/edit_steering.py [--data data/audio-clevrgan] [--n 256] [--dissect 300] [--means 300]
        [--factor 8] [--alphas 1,2,3,4] [--both 2,3] [--out benchmarks/results/edit_steering.md]

Why: ``gan-targeted``'s swaps (``insert``, ``swap_cells = "value"``) ablate the source shape's dissected units and
set the target's to ``factor`` x their dissection threshold on the source's cells. They draw the target shape in a
third of the images or less (cube to cylinder: 7%, ``benchmarks/edit_insertion.py``), and where they do the
segmenter reads the new shape with less confidence than the GAN's own redraws of the same change
(``benchmarks/swap_redraws.py``); a model trained on them learns their look more than the shape. One reason: a
swap moves 6-8 shape units and leaves the layer's other units (the shared geometry units among them, which draw
every object's outline) as they were for the old shape.

Steering moves every channel instead: on the cells the segmenter reads as the source shape,
``h <- h + alpha * (mean_t - mean_s)``, where ``mean_v`` (Float[C]) is the layer's mean feature over the cells read
as shape ``v`` in ``--means`` other GAN samples. The colour, material and size parts of the two means are alike (the
attributes are drawn independently), so the difference carries the shape. It can also draw a sphere from a cube or
a cylinder and the other way, which insertion (no unit draws a sphere) cannot.

For every ordered pair of shapes, over the ``--n`` GAN samples holding a source cell: the share the segmenter reads
with some object changed to the target shape, that as the only change, no change at all, and the mean confidence
(lowest attribute probability) of the objects read as the target. Every cell of the source value is edited, as
training's ``swap_cells = "value"`` edits every such cell of its salient region.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples"), str(ROOT / "plugins")]

SHAPES = ("cube", "cylinder", "sphere")


def tally(before: list, after: list, rows: list[int], target: str) -> dict[str, float]:
    """Shares (in %) of the images ``rows`` whose edit the segmenter reads as: some object now ``target`` in shape;
    that as the only change; no change at all; and the mean confidence of the objects now read as ``target``."""
    from negmine_gan.export import describe_change

    hit = only = nothing = 0
    confidences = []
    for i in rows:
        change = describe_change(before[i], after[i])
        targets = [c for c in change["changes"] if c.get("attribute") == "shape" and c.get("new") == target]
        hit += bool(targets)
        only += bool(targets) and change["single_attribute"]
        nothing += not change["changed"]
        for c in targets:  # the edited object as read after the edit: the nearest object of the target shape
            o = before[i][c["object"]]
            near = min((p for p in after[i] if p["shape"] == target),
                       key=lambda p: (p["x"] - o["x"]) ** 2 + (p["y"] - o["y"]) ** 2)
            confidences.append(near["confidence"])
    n = max(1, len(rows))
    return {"to target": 100 * hit / n, "only change": 100 * only / n, "no change": 100 * nothing / n,
            "confidence": sum(confidences) / len(confidences) if confidences else float("nan")}


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/audio-clevrgan")
    parser.add_argument("--n", type=int, default=256, help="GAN samples edited")
    parser.add_argument("--dissect", type=int, default=300, help="GAN samples for the dissection (insertion's units)")
    parser.add_argument("--means", type=int, default=300, help="GAN samples for the shapes' mean features")
    parser.add_argument("--factor", type=float, default=8.0, help="insertion level, x each unit's threshold")
    parser.add_argument("--alphas", default="1,2,3,4", help="steering strengths")
    parser.add_argument("--both", default="2,3", help="steering strengths followed by insertion")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    from audio_clevrgan.dataset import concept_maps, describe_images
    from audio_clevrgan.train_scripts import load_gan, load_segmenter
    from negmine.experiment import machine_record
    from negmine_gan.base import to_model_input
    from negmine_gan.concepts import compute_task_concepts
    from negmine_gan.edit import GanEditor

    record = machine_record()
    root = Path(args.data)
    started = time.time()
    editor = GanEditor(load_gan(root / "gan.pt"), "layer4")
    segmenter = load_segmenter(root / "segmenter.pt")
    z_dim = int(editor.gan.z_dim)

    def describe(images01: torch.Tensor) -> list:
        return describe_images(segmenter, images01)[0]

    def shape_cells(images01: torch.Tensor, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Bool[N, h, w] per shape: the layer cells at least half of whose pixels the segmenter reads as it."""
        names, value_maps = concept_maps(segmenter, images01)
        return {v: torch.nn.functional.adaptive_avg_pool2d(value_maps[:, names.index(v)].float(), grid) >= 0.5
                for v in SHAPES}

    concepts = compute_task_concepts(editor, to_model_input, lambda x: concept_maps(segmenter, x),
                                     n_dissect=args.dissect, seed=0, device=torch.device("cpu"), z_dim=z_dim)

    # the shapes' mean features, from samples other than the dissection's and the edited ones
    zm = torch.randn(args.means, z_dim, generator=torch.Generator().manual_seed(2))
    hm = editor.features(zm)  # Float[M, C, h, w]
    cells_m = shape_cells(to_model_input(editor.generate(zm, features=hm)), hm.shape[-2:])
    means = {}
    for v in SHAPES:
        picked = hm.permute(0, 2, 3, 1)[cells_m[v]]  # Float[cells, C]
        means[v] = picked.mean(0)
    spread = {v: int(cells_m[v].sum()) for v in SHAPES}

    z = torch.randn(args.n, z_dim, generator=torch.Generator().manual_seed(1))
    h = editor.features(z)  # Float[N, C, h, w]
    images = to_model_input(editor.generate(z, features=h))
    before = describe(images)
    cells = shape_cells(images, h.shape[-2:])

    def specific(shape: str) -> torch.Tensor | None:
        if shape not in concepts.names:
            return None
        k = concepts.names.index(shape)
        return concepts.ranking[k, : int(concepts.sizes[k])]

    def insertion(source: str, target: str, base: torch.Tensor | None = None) -> torch.Tensor:
        """Training's swap: the source's units ablated, the target's set to factor x threshold (a sphere has no
        units: ablation alone for sphere targets, insertion alone on sphere cells); on ``base`` (steered features)
        instead of the sample's own when given."""
        a, v = torch.zeros_like(h), torch.zeros_like(h)
        where = cells[source][:, None].float()
        for units in (specific(source), specific(target)):
            if units is not None:
                a[:, units] = where.expand(-1, len(units), -1, -1)
        units = specific(target)
        if units is not None:
            level = concepts.thresholds[units].float() * args.factor
            v[:, units] = level[None, :, None, None].expand(h.shape[0], -1, *h.shape[-2:])
        return editor.generate(z, ablation=a, replacement=v, features=h if base is None else base)

    def steered(source: str, target: str, alpha: float) -> torch.Tensor:
        """Float[N, C, h, w]: the features moved by alpha x (mean_t - mean_s) on the source's cells."""
        shift = alpha * (means[target] - means[source])  # Float[C]
        return h + cells[source][:, None].float() * shift[None, :, None, None]

    lines = []
    for source in SHAPES:
        rows = cells[source].flatten(1).any(1).nonzero().flatten().tolist()
        for target in SHAPES:
            if target == source:
                continue
            after = describe(to_model_input(insertion(source, target)))
            lines.append((f"{source} to {target}", f"insertion x{args.factor:g} (training's swap)", len(rows),
                          tally(before, after, rows, target)))
            for alpha in (float(a) for a in args.alphas.split(",")):
                after = describe(to_model_input(editor.generate(z, features=steered(source, target, alpha))))
                lines.append((f"{source} to {target}", f"steering x{alpha:g}", len(rows),
                              tally(before, after, rows, target)))
            for alpha in (float(a) for a in args.both.split(",") if a):
                after = describe(to_model_input(insertion(source, target, steered(source, target, alpha))))
                lines.append((f"{source} to {target}", f"steering x{alpha:g}, then insertion x{args.factor:g}",
                              len(rows), tally(before, after, rows, target)))
    out = [f"- command: `python benchmarks/edit_steering.py --data {args.data} --n {args.n} --dissect {args.dissect}"
           f" --means {args.means} --factor {args.factor:g} --alphas {args.alphas} --both {args.both}`",
           f"- commit {record['commit']}; {record['machine']}; {torch.get_num_threads()} thread(s); "
           f"{time.time() - started:.0f} s",
           "- cells behind the mean features: " + ", ".join(f"{v} {spread[v]}" for v in SHAPES),
           "", "| change | edit | images | to target (%) | only change (%) | no change (%) | confidence of the new shape |",
           "|---|---|---|---|---|---|---|"]
    out += [f"| {change} | {name} | {n} | {t['to target']:.1f} | {t['only change']:.1f} | {t['no change']:.1f} | "
            f"{t['confidence']:.3f} |" for change, name, n, t in lines]
    text = "\n".join(out)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
