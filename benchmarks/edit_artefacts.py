"""Do trained models tell GAN edits from originals by their content or by how they look?

Usage::

    negmine edits export RUN_DIR --checkpoint step-800 --generator gan-random --n 300 --out EDITS
    python benchmarks/edit_artefacts.py --edits EDITS RUN_DIR [RUN_DIR ...] [--checkpoint best]

EDITS is an export (``negmine edits export``: original and edited PNGs of held-out pairs, both quantised the same
way). Each run scores every exported image, original and edited, against the captions of all exported pairs. An edit
is a good negative for its own caption when that caption scores the original higher; it teaches a word only if the
other captions do not also prefer the original, because then the model has learnt to spot edits (ablation
artefacts, a blurred region) rather than what the caption says. Columns:

- own prefers original: P(s(c_i, orig_i) > s(c_i, edit_i)).
- others prefer original: P(s(c_j, orig_i) > s(c_j, edit_i)) over j != i (50% if edits look like any image).
- own drop / other drop: mean s(c, orig) - s(c, edit) for the own caption / the others, in units of the standard
  deviation of the original images' scores with other captions (so that models of different score scales compare).
- content share: (own drop - other drop) / own drop, the part of the own caption's preference that the other
  captions do not share.
- within margin: P(s(c_i, orig_i) - s(c_i, edit_i) < margin), the edits whose hinge term would be non-zero in
  training (the run's margin): an edit the model already puts a margin below the original teaches nothing.

``--batchnorm train`` encodes as the trainer does instead of as evaluation does: BatchNorm layers normalise with the
statistics of the batch at hand, captions and originals in batches of 64 and the edits in batches of their own
(``--edit-batch``, 32: half the anchors of a 64-pair batch are edited in paper-cpu.toml). A model that separates edits
far better this way than in evaluation mode tells them apart by their batch's statistics, which exist only in
training.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
from pathlib import Path

import torch

from negmine.experiment import machine_record

ROOT = Path(__file__).resolve().parents[1]


def artefact_stats(s_orig: torch.Tensor, s_edit: torch.Tensor, margin: float = 1.0) -> dict[str, float]:
    """Statistics of two score matrices Float[N images, N captions] (row i: image i, original or edited; column j:
    caption j; the diagonal pairs an image with its own caption)."""
    n = s_orig.shape[0]
    own = torch.eye(n, dtype=torch.bool)
    diff = s_orig - s_edit
    scale = s_orig[~own].std().clamp_min(1e-12)
    own_drop = diff[own].mean() / scale
    other_drop = diff[~own].mean() / scale
    return {"own_prefers": (diff[own] > 0).float().mean().item(),
            "others_prefer": (diff[~own] > 0).float().mean().item(),
            "own_drop": own_drop.item(), "other_drop": other_drop.item(),
            "content_share": ((own_drop - other_drop) / own_drop).item() if own_drop.abs() > 1e-9 else float("nan"),
            "within_margin": (diff[own] < margin).float().mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--edits", required=True, type=Path, help="a `negmine edits export` directory")
    parser.add_argument("--checkpoint", default="best", help="checkpoint name or .pt path (per run)")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    parser.add_argument("--batchnorm", choices=("eval", "train"), default="eval",
                        help="BatchNorm with running statistics (eval) or each batch's own (train, as in training)")
    parser.add_argument("--edit-batch", type=int, default=32, help="edits per forward pass with --batchnorm train")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from audio_clevrgan import evaluate as ev
    from negmine.evaluate import load_run
    from negmine.model import Embedding
    from negmine.plugins import get_plugin_manager

    meta = json.loads((args.edits / "edits.json").read_text())
    split_name = meta.get("split", "test")  # exports before the split was recorded edited the test split
    edits = [json.loads(line) for line in (args.edits / "edits.jsonl").read_text().splitlines()]
    pm = get_plugin_manager()
    lines = ["| run | checkpoint (step) | own prefers original | others prefer original | own drop | other drop | "
             "content share | within margin |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    device = torch.device("cpu")
    for run in args.runs:
        task, config, state = load_run(pm, Path(run), args.checkpoint, "cpu")
        model = task.model.eval()
        root = Path(task.resources["data_dir"])
        split = getattr(task, split_name)
        if max(e["id"] for e in edits) >= len(split.rows):
            raise SystemExit(f"{run}: the edits index pairs beyond its {split_name} split")
        by_id = {e["id"]: split.rows[e["id"]] for e in edits}
        if args.batchnorm == "train":  # on a copy: a forward pass in training mode moves the running statistics
            model = copy.deepcopy(model).train()
        pad = float(task.resources.get("audio_pad", 0.0))
        captions = [root / by_id[e["id"]]["audio"] for e in edits]
        with torch.no_grad():
            audio = Embedding.cat([ev._encode_audio(model, captions[i : i + 64], device, pad)
                                   for i in range(0, len(captions), 64)])
            orig = ev._encode_images(model, [args.edits / e["original"] for e in edits], device, batch=64)
            edit = ev._encode_images(model, [args.edits / e["edited"] for e in edits], device,
                                     batch=args.edit_batch if args.batchnorm == "train" else 64)
            stats = artefact_stats(model.score_matrix(orig, audio).cpu(), model.score_matrix(edit, audio).cpu(),
                                   float(config["margin"]))
        line = (f"| {run} | {args.checkpoint} ({state.get('global_step')}) | {100 * stats['own_prefers']:.1f}% | "
                f"{100 * stats['others_prefer']:.1f}% | {stats['own_drop']:.2f} | {stats['other_drop']:.2f} | "
                f"{100 * stats['content_share']:.0f}% | {100 * stats['within_margin']:.1f}% |")
        lines.append(line)
        print(line, flush=True)
    if args.out:
        header = (f"Edits: {args.edits} ({len(edits)} {meta.get('generator')} edits of the {split_name} "
                  f"split, made by {meta.get('run_dir')} at {meta.get('checkpoint')}).\n\n"
                  f"Command: `python benchmarks/edit_artefacts.py --edits {args.edits} {' '.join(args.runs)} "
                  f"--checkpoint {args.checkpoint} --batchnorm {args.batchnorm}`  \nMachine: {platform.machine()}, torch {torch.__version__}; "
                  f"commit {machine_record()['commit']}\n\n")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(header + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
