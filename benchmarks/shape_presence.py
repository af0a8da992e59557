"""How clearly gan-targeted's presence tells which shape a spot draws (the swap source, option ``present``).

Usage::

    python benchmarks/shape_presence.py [--data data/audio-clevrgan] [--n 128] [--out FILE]

Dissects ``layer4`` against the segmenter's value maps as ``gan-targeted`` does (``compute_task_concepts``, 300
samples), draws ``--n`` GAN samples, and for the cells the segmenter reads as each shape prints the 10/25/50/75/90th
percentiles of the presence of the cube and cylinder units there (``TaskConcepts.presence`` with the run's
``units = 0.0625``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "plugins")]


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/audio-clevrgan")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from audio_clevrgan.dataset import concept_maps
    from audio_clevrgan.train_scripts import load_gan, load_segmenter
    from negmine_gan.base import to_model_input
    from negmine_gan.concepts import compute_task_concepts
    from negmine_gan.edit import GanEditor

    root = Path(args.data)
    editor = GanEditor(load_gan(root / "gan.pt"), "layer4")
    segmenter = load_segmenter(root / "segmenter.pt")

    def maps(images01: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        return concept_maps(segmenter, images01)

    concepts = compute_task_concepts(editor, to_model_input, maps, n_dissect=300, seed=0,
                                     device=torch.device("cpu"), z_dim=editor.gan.z_dim)
    z = torch.randn(args.n, editor.gan.z_dim, generator=torch.Generator().manual_seed(1))
    h = editor.features(z)
    names, value_maps = maps(to_model_input(editor.generate(z, features=h)))
    units = round(0.0625 * h.shape[1])
    from negmine.experiment import machine_record

    commit = machine_record()['commit']
    lines = [f"- command: `python benchmarks/shape_presence.py --data {args.data} --n {args.n}`; commit {commit}",
             "", "| cells read as | units of | images | presence p10 / p25 / p50 / p75 / p90 |", "|---|---|---|---|"]
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    for shape in ("cube", "cylinder", "sphere"):
        cells = torch.nn.functional.adaptive_avg_pool2d(value_maps[:, names.index(shape)].float(), h.shape[-2:]) >= 0.5
        rows = cells.flatten(1).any(1)
        presence = concepts.presence(h[rows], cells[rows], units)
        for unit_of in ("cube", "cylinder"):
            v = presence[:, concepts.names.index(unit_of)].quantile(q)
            lines.append(f"| {shape} | {unit_of} | {int(rows.sum())} | " + " / ".join(f"{x:.2f}" for x in v) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
