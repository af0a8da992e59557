"""How the Audio CLEVRGAN attribute test depends on how the attribute word is spoken and scored.

Usage::

    python benchmarks/attribute_probes.py RUN_DIR [RUN_DIR ...] [--checkpoint best]

For each run, the Table 1 AUCs (test split, 500 images with / without each value, mean over the four groups; raw and
image-normalised) with the word given four ways: isolated (the paper's protocol, `attribute_test`'s top level); the
isolated word padded with the task's pad value to the training length; the carrier phrase "there is a <word>." scored
on all its frames; and the same phrase scored on the word's own frames only (`attribute_test`'s "context").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--checkpoint", default="best", help="checkpoint name or .pt path (per run)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from negmine.evaluate import load_run
    from negmine.plugins import get_plugin_manager

    pm = get_plugin_manager()
    print("| run | checkpoint (step) | word given as | AUC mean | normalised mean | normalised shape / material / "
          "color / size |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        probe(load_run(pm, Path(run), args.checkpoint, "cpu"), run, args.checkpoint)


def probe(loaded: tuple, run: str, checkpoint: str) -> None:
    """Print the four rows of one run."""
    from audio_clevrgan import evaluate as ev
    from audio_clevrgan.dataset import load_features

    task, config, state = loaded
    model = task.model.eval()
    device = torch.device("cpu")
    root = Path(task.resources["data_dir"])
    pad = float(task.resources.get("audio_pad", 0.0))
    frames = int(task.test.frames)
    rows = task.test.rows
    words = [json.loads(line) for line in (root / "semantic" / "words.jsonl").read_text().splitlines()]
    names = list(dict.fromkeys(w["word"] for w in words))
    thresholds = ev.pixel_thresholds(int(task.resources["meta"]["image_size"]))

    def padded(entries: list[dict]) -> object:
        feats = [load_features(root / e["audio"]) for e in entries]
        long = [torch.cat([f, torch.full((40, frames - f.shape[1]), pad)], 1) if f.shape[1] < frames else f
                for f in feats]
        emb = ev._encode_audio_features(model, long, device, pad)
        # every padded frame counts, as in training
        return type(emb)(emb.values, torch.full_like(emb.lengths, emb.values.shape[-1]))

    def phrase(entries: list[dict]) -> object:
        return ev._encode_audio_features(model, [f for f, _ in ev.context_recordings(root, entries)], device, pad)

    variants = {"isolated (Table 1 protocol)": ev._spoken_word_encoder(model, root, device, pad), "isolated, padded to the training length": padded,
                "'there is a <word>.', all frames": phrase,
                "'there is a <word>.', the word's frames (context)": ev._spoken_context_encoder(model, root, device,
                                                                                              pad)}
    with torch.no_grad():
        images = ev._encode_images(model, [root / r["image"] for r in rows], device)
        for label, encode in variants.items():
            scores = ev.word_scores(model, images, words, encode)
            s = ev._auc_summary(scores, names, words, rows, thresholds, per_side=500, seed=0)
            groups = " / ".join(f"{100 * s['per_group_normalised'][g]:.1f}" for g in ev.GROUP_ORDER)
            print(f"| {run} | {checkpoint} ({state.get('global_step')}) | {label} | {100 * s['mean']:.1f} | "
                  f"{100 * s['mean_normalised']:.1f} | {groups} |", flush=True)


if __name__ == "__main__":
    main()
