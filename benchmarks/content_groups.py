"""How often two training pairs of an Audio CLEVRGAN dataset describe the same objects (false negatives in a batch).

Usage::

    python benchmarks/content_groups.py data/audio-clevrgan [--batch 64]

Prints the number of training pairs, of distinct contents (the multiset of size, colour, material and shape that
``group_by = "content"`` groups by), the fraction of pairs that share their content with another pair, and the
expected number of same-content partners an anchor meets in a uniformly drawn batch.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from audio_clevrgan.dataset import read_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    _, rows = read_dataset(args.data)
    train = [r for r in rows if r["split"] == "train"]
    counts = Counter(tuple(sorted((o["size"], o["color"], o["material"], o["shape"]) for o in r["objects"]))
                     for r in train)
    n = len(train)
    shared = sum(c for c in counts.values() if c > 1) / n
    partners = sum(c * (c - 1) for c in counts.values()) / n / (n - 1) * (args.batch - 1)
    print("| training pairs | distinct contents | pairs sharing their content | same-content partners per anchor "
          f"in a batch of {args.batch} |")
    print("|---|---|---|---|")
    print(f"| {n} | {len(counts)} | {100 * shared:.1f}% | {partners:.3f} |")


if __name__ == "__main__":
    main()
