"""Do gan-targeted's look-matched positives (option matched_positive) carry the look of its swaps?

Usage::

    python benchmarks/matched_positives.py RUN_DIR [RUN_DIR ...] --batches 4 [--checkpoint last] [--out FILE]
        [--option matched_insert=4 ...]

Each run's model (a trained Audio CLEVRGAN run whose config uses ``gan-targeted`` swaps, ``insert`` > 0) mines
``--batches`` batches of 64 training pairs with its own generator options plus ``matched_positive = true``, the
first batches of a fixed permutation of the training split (seed 0), the model in evaluation mode. For every swap
given a matched positive (its source value redrawn as itself on the swap's cells, still read by the task as true of
the caption) it scores the GAN's original, the swap and the matched positive against the captions of the batch, and
prints, for the swaps and the matched positives each (``artefact_stats`` of ``edit_artefacts.py``):

- others prefer original: P(s(c_j, orig_i) > s(c_j, image_i)) over the other captions j != i: above 50%, the image
  carries a look that lowers its score against any caption.
- own prefers original, own drop / other drop (in standard deviations of the originals' scores), within margin.
- pixel change: the mean absolute change from the original (images in [0, 1]) over the pixels of the edit's region
  cells, and over the other pixels.

``--option KEY=VALUE`` (repeatable) sets a ``gan-targeted`` option on top of the run's (e.g. ``matched_insert=4``, a
gentler redraw of the source).

A matched positive does its job when the other captions prefer the original over it about as often as over the
swap (the same look) while its own caption does not (no change of content): then in training the hinge between a
swap and its matched positive can only be met by what the swap changed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from negmine.experiment import machine_record

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_artefacts import artefact_stats  # noqa: E402


def pooled_stats(originals: list[torch.Tensor], edits: list[torch.Tensor], margin: float) -> dict[str, float]:
    """``artefact_stats`` per batch (score matrices Float[M, M]: a batch's kept images against their captions),
    pooled over the batches weighted by their count; batches of one image (no other caption) are left out."""
    parts = [(artefact_stats(o, e, margin), o.shape[0]) for o, e in zip(originals, edits, strict=True)
             if o.shape[0] > 1]
    if not parts:
        raise SystemExit("no batch had two swaps with a matched positive: mine more batches (--batches)")
    total = sum(n for _, n in parts)
    return {key: sum(st[key] * n for st, n in parts) / total for key in parts[0][0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--checkpoint", default="last", help="checkpoint name or .pt path (per run)")
    parser.add_argument("--batches", type=int, default=4, help="batches of 64 training pairs mined per run")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    parser.add_argument("--generator-from", type=Path, help="a run whose gan-targeted options and state (dissection, "
                        "warm-start level) every run mines with, e.g. to score a swap run's edits with DaveNet")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a gan-targeted option set on top of the run's (repeatable), e.g. matched_insert=4")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from negmine.config import parse_key_values
    from negmine.errors import ConfigError

    try:  # the CLI's own parsing of --option values (numbers, booleans, else strings)
        extra_options = parse_key_values(args.option, "--option", dashes_to_underscores=True)
    except ConfigError as err:
        raise SystemExit(str(err)) from None

    from negmine.evaluate import load_run
    from negmine.plugins import get_plugin_manager
    from negmine.testing import batch_context
    from negmine_gan.export import images_for_png
    from negmine_gan.targeted import GanTargetedEdits

    pm = get_plugin_manager()
    lines = ["| run | checkpoint (step) | options | swaps | matched | images | others prefer original "
             "| own prefers original | own drop | other drop | within margin | pixel change in region / outside |",
             "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    shown_options = ", ".join(args.option) or "the run's"
    print("\n".join(lines), flush=True)
    for run in args.runs:
        source = args.generator_from or run
        source_config = json.loads((source / "config.json").read_text())
        # the task reads the captions as the source run's did (e.g. still_true_captions: full captions too)
        reading = {k: v for k, v in source_config["task_options"].items() if k == "still_true_captions"}
        task, config, state = load_run(pm, run, args.checkpoint, "cpu", task_options=reading)
        model = task.model.eval()
        stage = source_config["stages"][-1]
        options = dict(stage["generators"]["gan-targeted"])
        options["matched_positive"] = True
        options.update(extra_options)
        gen = GanTargetedEdits(GanTargetedEdits.Options(**options), seed=0, task=task)
        # the run's dissection and warm-start level, from the checkpoint that keeps the generators' states (the
        # final one may not): no new dissection, and the edits start at the escalation level training ended on
        saved = torch.load(source / "checkpoints" / f"stage-{stage['name']}.pt", map_location="cpu",
                           weights_only=False).get("generators") or {}
        if "gan-targeted" in saved:
            gen.load_state_dict(saved["gan-targeted"])
        if hasattr(task.train, "use_generated_positives"):  # as at a training stage's start: G(z) as side a
            task.train.use_generated_positives(lambda z, g=gen: g.to_input(g.generate_with_features(z)[1]))
            gen._positives_in_batch = True
        order = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(0))
        scores: dict[str, list[torch.Tensor]] = {"original": [], "swap": [], "matched": []}
        change: dict[str, list[torch.Tensor]] = {"swap": [], "matched": []}  # per kept edit: [inside, outside]
        swaps = matched_count = 0
        for k in range(args.batches):
            ctx = batch_context(task, order[64 * k : 64 * (k + 1)], step=int(state.get("global_step", 0)))
            negs = gen.generate(ctx)[0]
            keep = negs.valid[:, 0] & negs.meta["matched"][:, 0].to(negs.valid.device)
            swaps += int(negs.valid.sum())
            matched_count += int(keep.sum())
            if not bool(keep.any()):
                continue
            original = gen.to_input(gen.originals(ctx, ctx.batch.extras["latent"])[1])
            with torch.no_grad():
                captions = ctx.embeddings[1]
                rows = keep.nonzero().squeeze(1)
                for name, images in (("original", original[rows]), ("swap", negs.inputs[rows, 0]),
                                     ("matched", negs.meta["matched_positive"][rows, 0])):
                    s = model.score_matrix(model.encode(0, images), captions).cpu()  # [M, B]
                    # square it on the kept rows: image i against the captions of the kept pairs, own on the diagonal
                    scores[name].append(s[:, rows.cpu()])
                shown = {name: images_for_png(task, images).cpu() for name, images in (
                    ("original", original[rows]), ("swap", negs.inputs[rows, 0]),
                    ("matched", negs.meta["matched_positive"][rows, 0]))}
                cells = negs.meta["region"][rows, 0].float().cpu()[:, None]  # [M, 1, h, w] cells of the GAN's layer
                inside = torch.nn.functional.interpolate(cells, size=shown["original"].shape[-2:], mode="nearest")[:, 0]
                for edit in ("swap", "matched"):
                    diff = (shown[edit] - shown["original"]).abs().mean(1)  # [M, H, W]
                    change[edit].append(torch.stack([(diff * inside).sum((1, 2)) / inside.sum((1, 2)).clamp_min(1),
                                                     (diff * (1 - inside)).sum((1, 2))
                                                     / (1 - inside).sum((1, 2)).clamp_min(1)], 1))
        for edit in ("swap", "matched"):
            st = pooled_stats(scores["original"], scores[edit], float(config["margin"]))
            pixels = torch.cat(change[edit]).mean(0)
            line = (f"| {run.parent.name[:48]}.../{run.name} | "
                    f"{args.checkpoint} ({state.get('global_step')}) | {shown_options} | {swaps} | {matched_count} | "
                    f"{edit} | {100 * st['others_prefer']:.1f}% | {100 * st['own_prefers']:.1f}% | "
                    f"{st['own_drop']:.2f} | {st['other_drop']:.2f} | {100 * st['within_margin']:.1f}% | "
                    f"{pixels[0]:.3f} / {pixels[1]:.4f} |")
            lines.append(line)
            print(line, flush=True)
    if args.out:
        extra = f" --generator-from {args.generator_from}" if args.generator_from else ""
        extra += "".join(f" --option {o}" for o in args.option)
        header = (f"Command: `python benchmarks/matched_positives.py {' '.join(map(str, args.runs))} --checkpoint "
                  f"{args.checkpoint} --batches {args.batches}{extra}`  \nMachine: {platform.machine()}, torch "
                  f"{torch.__version__}; commit {machine_record()['commit']}\n\n")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(header + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
