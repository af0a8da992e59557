"""How often an isolated word's in-batch impostor holds the word's value: the false negatives of one-word captions.

With task option ``isolated_words`` a fifth of the training captions are one attribute word spoken alone ("metal").
Content groups only keep captions of the same objects apart, so the word's in-batch impostors are images that often
hold the word's value (70% of training images hold a given material): false negatives. A random negative is one
with the base rate; a *hard* negative is the impostor the model scores highest, and a model that has learned the
word scores exactly the images holding it highest. This script measures, for trained runs, over random training
batches of 64 (seeded; the trainer's own batches are random draws of the same size):

- ``random``: the share of a one-word anchor's in-batch impostors (same group excluded) whose image holds its value;
- ``hardest``: the share of one-word anchors whose hardest impostor image (highest score) holds its value;
- ``hardest, image side``: the share of images whose hardest impostor caption is a one-word caption true of them,
  among images whose hardest impostor is a one-word caption.

The mask is the task's own ``false_negatives`` (task option ``exclude_true_words``), so "true of" is exactly what
that option would exclude::

    PYTHONPATH=examples OMP_NUM_THREADS=1 python benchmarks/isolated_word_impostors.py RUN_DIR [RUN_DIR ...] \\
        [--batches 20] [--out benchmarks/results/isolated_word_impostors.md]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import torch  # noqa: E402

from negmine.evaluate import load_run  # noqa: E402
from negmine.experiment import machine_record  # noqa: E402
from negmine.plugins import get_plugin_manager  # noqa: E402


@torch.no_grad()
def measure(run_dir: Path, batches: int, batch_size: int = 64, seed: int = 0, checkpoint: str = "best") -> dict:
    """The three shares above for ``run_dir``'s checkpoint, over ``batches`` random training batches."""
    task, _config, state = load_run(get_plugin_manager(), run_dir, checkpoint)
    train = task.train
    if getattr(train, "isolated", None) is None:
        raise SystemExit(f"{run_dir}: the run was not trained with task option isolated_words")
    train.exclude_true_words()  # computes the task's mask; the run itself trained with it only if its option said so
    isolated = torch.tensor([w is not None for w in train.isolated])  # Bool[N]: caption i is one word
    model = task.model.eval()
    gen = torch.Generator().manual_seed(seed)
    n_random = n_random_true = n_anchor = n_hard_true = n_img = n_img_true = 0
    for _ in range(batches):
        ids = torch.randperm(len(train), generator=gen)[:batch_size]
        batch = train.batch(ids)
        scores = model.score_matrix(model.encode(0, batch.a), model.encode(1, batch.b))  # Float[B images, B captions]
        groups = batch.group_ids
        impostor = groups[:, None] != groups[None, :]  # Bool[B, B]: never the pair itself or its content group
        true_of = train.false_negatives(ids, ids)  # Bool[B, B]: i's word true of j's image or j's word of i's image
        one_word = isolated[ids]  # Bool[B]
        # caption side: one-word caption j against images i (column j of the image x caption matrix)
        cap_scores = scores.T.masked_fill(~impostor, float("-inf"))  # Float[B captions, B images]
        for j in one_word.nonzero().flatten().tolist():
            cands = impostor[j]
            n_random += int(cands.sum())
            n_random_true += int((true_of[j] & cands).sum())
            n_anchor += 1
            n_hard_true += int(true_of[j, cap_scores[j].argmax()])
        # image side: image i's hardest impostor caption, when that caption is one word
        img_scores = scores.masked_fill(~impostor, float("-inf"))
        hardest = img_scores.argmax(1)
        for i, j in enumerate(hardest.tolist()):
            if one_word[j]:
                n_img += 1
                n_img_true += int(true_of[i, j])
    return {"run": str(run_dir), "step": state.get("global_step"), "anchors": n_anchor,
            "random": n_random_true / max(n_random, 1), "hardest": n_hard_true / max(n_anchor, 1),
            "images": n_img, "hardest_image_side": n_img_true / max(n_img, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = [measure(run, args.batches, checkpoint=args.checkpoint) for run in args.runs]
    lines = [
        "# Isolated words: how often an in-batch impostor holds the word's value",
        "",
        f"- command: `PYTHONPATH=examples OMP_NUM_THREADS=1 python benchmarks/isolated_word_impostors.py "
        f"{' '.join(map(str, args.runs))} --batches {args.batches}`",
        f"- machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"Python {platform.python_version()}; {time.perf_counter() - started:.0f} s",
        f"- commit: {machine_record()['commit']}",
        f"- {args.batches} training batches of 64 (seed 0), checkpoint `{args.checkpoint}`; \"true of\" is the task's "
        "`false_negatives` (what `exclude_true_words` excludes)",
        "",
        "| run | step | one-word anchors | random impostor holds the value | hardest impostor holds the value "
        "| images whose hardest impostor is one word | ... and it is true of the image |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| `{r['run']}` | {r['step']} | {r['anchors']} | {100 * r['random']:.1f}% | "
                     f"{100 * r['hardest']:.1f}% | {r['images']} | {100 * r['hardest_image_side']:.1f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
