"""What the hardest in-batch negative of an Audio CLEVRGAN model is: how close its caption content is to the anchor's.

Usage::

    python benchmarks/hardest_negatives.py RUN_DIR [--checkpoint step-800] [--batches 20] [--data DATA_DIR]

Draws random training batches of 64, encodes them with the run's model and, for every anchor caption, finds the
hardest impostor image (highest score, same-content pairs excluded as with ``group_by = "content"``). Prints how many
object attributes separate the impostor's content from the anchor's (0: the same objects) for the hardest impostor
and for a uniformly drawn one, how often each scores above the positive, and how many distinct images are the
hardest impostors of a batch (few: a handful of "hub" images score high with every caption).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


def content(row: dict) -> list[tuple[str, str, str, str]]:
    return sorted((o["size"], o["color"], o["material"], o["shape"]) for o in row["objects"])


def distance(a: list, b: list) -> int:
    """Attributes to change (4 per added or removed object) to turn content a into b, objects matched greedily."""
    b = list(b)
    cost = 0
    for obj in a:
        best = min(range(len(b)), key=lambda j: sum(x != y for x, y in zip(obj, b[j], strict=True)), default=None)
        if best is None:
            cost += 4
            continue
        cost += sum(x != y for x, y in zip(obj, b[best], strict=True))
        b.pop(best)
    return cost + 4 * len(b)


def main() -> None:
    from negmine.evaluate import load_run
    from negmine.plugins import get_plugin_manager

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--checkpoint", default="best")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--data", help="override the run's data_dir")
    args = ap.parse_args()
    torch.manual_seed(0)
    task, _, _ = load_run(get_plugin_manager(), args.run, args.checkpoint, "cpu",
                          {"data_dir": args.data} if args.data else None)
    model, data = task.model.eval(), task.train
    hardest, uniform, above_h, above_u, n, distinct = Counter(), Counter(), 0, 0, 0, []
    for _ in range(args.batches):
        ids = torch.randperm(len(data))[:64]
        batch = data.batch(ids)
        with torch.no_grad():
            s = model.score_matrix(model.encode(0, batch.a), model.encode(1, batch.b))  # [images, captions]
        rows = [data.rows[int(i)] for i in ids]
        keys = [content(r) for r in rows]
        same = torch.tensor([[keys[i] == keys[j] for j in range(64)] for i in range(64)])
        scores = s.T.masked_fill(same, float("-inf"))  # caption i against every other image j
        pos = s.diagonal()
        distinct.append(len(set(scores.argmax(1).tolist())))
        for i in range(64):
            j = int(scores[i].argmax())
            k = int(torch.multinomial((~same[i]).float(), 1))
            hardest[min(distance(keys[i], keys[j]), 8)] += 1
            uniform[min(distance(keys[i], keys[k]), 8)] += 1
            above_h += bool(scores[i, j] > pos[i])
            above_u += bool(scores[i, k] > pos[i])
            n += 1
    print(f"run {args.run} ({args.checkpoint}), {n} anchors in {args.batches} batches of 64; the hardest impostors "
          f"of a batch's 64 captions are {sum(distinct) / len(distinct):.1f} distinct images on average")
    print("| attributes apart (8: 8 or more) | " + " | ".join(str(d) for d in range(1, 9)) + " | above the positive |")
    print("|---" * 10 + "|")
    for name, hist, above in (("hardest impostor", hardest, above_h), ("uniform impostor", uniform, above_u)):
        print(f"| {name} | " + " | ".join(f"{100 * hist[d] / n:.1f}%" for d in range(1, 9)) + f" | {100 * above / n:.1f}% |")


if __name__ == "__main__":
    main()
