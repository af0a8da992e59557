"""What a trained model's spoken attribute words say about a GAN edit: the changed shape, or damage?

Usage::

    negmine edits export RUN_DIR --generator gan-targeted --option edit_fraction=1 --n 200 --out EDITS
    python benchmarks/edit_word_scores.py --edits EDITS RUN_DIR[:CHECKPOINT] [...] [--out FILE.md]

Each run scores every exported original and edited image with every isolated attribute word of the Table 1 protocol
(the mean over each word's recordings, as `attribute_test` does). For the edits in which the segmenter reads exactly
one change, the shape of one object (old -> new), with no other object of either shape, it reports the mean score
change edited - original of four kinds of words, in units of each word's standard deviation over the originals:

- the old shape's word, now false of the image: a model that grounds shape scores it lower (negative);
- the new shape's word, now true: higher (positive);
- the edited object's unchanged colour, material and size words, still true: unchanged (about 0); a table below
  splits them by attribute (and size by word), since a shape word learnt together with a size drags that size along;
- the words of values no object holds in either image, false before and after: unchanged (about 0).

A model that learnt to spot edited objects rather than shapes lowers the kept words as much as the old shape's word.
``P(old < kept)`` is the share of edits in which the old shape's word falls further than the mean of the kept words.
The edits' change to the score of the whole caption (own prefers original) is in `benchmarks/edit_artefacts.py`.

With ``--images N`` (default 500; 0 skips it) each run also scores the first N images of the test split with every
word and prints, per shape word, the words whose scores correlate best with it over those images: a model that keeps
two shapes apart scores them differently.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from negmine.experiment import machine_record

ROOT = Path(__file__).resolve().parents[1]
KEPT = ("color", "material", "size")
ROLES = ("old shape (now false)", "new shape (now true)", "kept words of the object", "absent values")


def shape_swaps(edits: list[dict]) -> list[tuple[int, dict]]:
    """(position, change) of the edits whose only read change is one object's shape, with no other object of
    the old or the new shape in either image (so the old word turns false and the new one true)."""
    out = []
    for k, e in enumerate(edits):
        changes = e["detected_change"].get("changes") or []
        if len(changes) != 1 or changes[0].get("attribute") != "shape":
            continue
        c = changes[0]
        if len(e["objects_edited"]) != len(e["objects_original"]):  # an object added or removed
            continue
        # the one change read leaves the other objects as they were, so the original's stand for both images
        others = [o for i, o in enumerate(e["objects_original"]) if i != c["object"]]
        if any(o["shape"] in (c["old"], c["new"]) for o in others):
            continue
        out.append((k, c))
    return out


def word_deltas(delta: torch.Tensor, names: list[str], edits: list[dict], swaps: list[tuple[int, dict]],
                values: dict[str, str]) -> dict[str, list[float]]:
    """Per role, the normalised score changes (``delta``: Float[N edits, W words]) of the shape swaps."""
    col = {n: j for j, n in enumerate(names)}
    out: dict[str, list[float]] = {r: [] for r in ROLES}
    out["P(old < kept)"] = []
    for k, c in swaps:
        e = edits[k]
        obj = e["objects_original"][c["object"]]
        old, new = float(delta[k, col[c["old"]]]), float(delta[k, col[c["new"]]])
        out.setdefault(f"{c['old']} now false", []).append(old)
        out.setdefault(f"{c['new']} now true", []).append(new)
        kept = [float(delta[k, col[obj[a]]]) for a in KEPT if obj.get(a) in col]
        for a in KEPT:
            if obj.get(a) in col:  # which kept words move: a shape learnt with a size lowers that size word too
                out.setdefault(f"kept {a}", []).append(float(delta[k, col[obj[a]]]))
                if a == "size":
                    out.setdefault(f"kept {obj[a]}", []).append(float(delta[k, col[obj[a]]]))
        held = {o[a] for o in e["objects_original"] + e["objects_edited"] for a in ("shape", "color", "material", "size")}
        absent = [float(delta[k, col[w]]) for w in names if w not in held and values.get(w) != "shape"]
        out[ROLES[0]].append(old)
        out[ROLES[1]].append(new)
        if kept:
            out[ROLES[2]].append(sum(kept) / len(kept))
            out["P(old < kept)"].append(float(old < sum(kept) / len(kept)))
        if absent:
            out[ROLES[3]].append(sum(absent) / len(absent))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="RUN_DIR or RUN_DIR:CHECKPOINT (a name or a .pt path; default best)")
    parser.add_argument("--edits", required=True, type=Path, help="a `negmine edits export` directory")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    parser.add_argument("--images", type=int, default=500, help="test images for the word correlations (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from audio_clevrgan import evaluate as ev
    from negmine.evaluate import load_run
    from negmine.plugins import get_plugin_manager

    edits = [json.loads(line) for line in (args.edits / "edits.jsonl").read_text().splitlines() if line.strip()]
    swaps = shape_swaps(edits)
    if not swaps:
        raise SystemExit(f"{args.edits}: no edit changes exactly one object's shape")
    pm = get_plugin_manager()
    lines = [f"| run | checkpoint (step) | {' | '.join(ROLES)} | P(old < kept) |", "|---|---|" + "---:|" * 5]
    print(f"{len(swaps)} of {len(edits)} edits change one object's shape and nothing else", flush=True)
    print("\n".join(lines), flush=True)
    per_word: list[tuple[str, dict[str, list[float]]]] = []
    per_kept: list[tuple[str, dict[str, list[float]]]] = []
    correlations: list[str] = []
    for spec in args.runs:
        run, _, checkpoint = spec.partition(":")
        task, _, state = load_run(pm, Path(run), checkpoint or "best", "cpu")
        model = task.model.eval()
        root = Path(task.resources["data_dir"])
        words = [json.loads(line) for line in (root / "semantic" / "words.jsonl").read_text().splitlines()]
        values = {w["word"]: w["attribute"] for w in words}
        names = list(dict.fromkeys(w["word"] for w in words))
        encode = ev._spoken_word_encoder(model, root, torch.device("cpu"), float(task.resources.get("audio_pad", 0.0)))
        with torch.no_grad():
            orig = ev._encode_images(model, [args.edits / e["original"] for e in edits], torch.device("cpu"), batch=64)
            edit = ev._encode_images(model, [args.edits / e["edited"] for e in edits], torch.device("cpu"), batch=64)
            s_orig = ev.word_scores(model, orig, words, encode)
            s_edit = ev.word_scores(model, edit, words, encode)
        delta = (s_edit - s_orig) / s_orig.std(0).clamp_min(1e-12)  # per word, in its own score scale
        roles = word_deltas(delta, names, edits, swaps, values)
        cells = [f"{sum(v) / len(v):+.2f}" if v else "-" for v in (roles[r] for r in ROLES)]
        p = roles["P(old < kept)"]
        line = (f"| {run} | {checkpoint or 'best'} ({state.get('global_step')}) | {' | '.join(cells)} | "
                f"{100 * sum(p) / max(1, len(p)):.0f}% |")
        lines.append(line)
        print(line, flush=True)
        label = f"{run} ({checkpoint or 'best'})"
        per_word.append((label, {k: v for k, v in roles.items() if k.endswith(("now false", "now true"))}))
        per_kept.append((label, {k: v for k, v in roles.items() if k.startswith("kept ") and k != ROLES[2]}))
        if args.images > 0:
            rows = task.test.rows[: args.images]
            with torch.no_grad():
                images = ev._encode_images(model, [root / r["image"] for r in rows], torch.device("cpu"))
                corr = torch.corrcoef(ev.word_scores(model, images, words, encode).T)
            for w in (n for n in names if values[n] == "shape"):
                j = names.index(w)
                top = sorted(((float(corr[j, k]), names[k]) for k in range(len(names)) if k != j), reverse=True)[:3]
                correlations.append(f"| {label} | {w} | " + ", ".join(f"{n} {v:+.2f}" for v, n in top) + " |")
    for title, table in (("By shape word", per_word), ("Kept words of the edited object, by attribute", per_kept)):
        keys = sorted({k for _, d in table for k in d})
        lines += ["", f"{title} (mean normalised change, edits):", "",
                  "| run | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        for label, d in table:
            lines.append(f"| {label} | " + " | ".join(
                f"{sum(d[k]) / len(d[k]):+.2f} ({len(d[k])})" if d.get(k) else "-" for k in keys) + " |")
        print("\n".join(lines[-(len(table) + 2):]), flush=True)
    if correlations:
        lines += ["", f"Word scores over the first {args.images} test images: the words best correlated with each shape "
                  "word", "", "| run | shape word | best correlated words |", "|---|---|---|", *correlations]
        print("\n".join(lines[-(len(correlations) + 2):]), flush=True)
    if args.out:
        header = (f"Edits: {args.edits} ({len(swaps)} of {len(edits)} change one object's shape and nothing else).\n\n"
                  f"Command: `python benchmarks/edit_word_scores.py --edits {args.edits} {' '.join(args.runs)} "
                  f"--images {args.images}`  \n"
                  f"Machine: {platform.machine()}, torch {torch.__version__}; commit {machine_record()['commit']}\n\n")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(header + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
