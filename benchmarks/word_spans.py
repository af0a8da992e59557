"""How many edits can ``localize = "word"`` compare on one word: the edited object's word, or a value named once?

An edit that changes one attribute of one object falsifies one word of its caption, the old value's word in that
object's description. ``AudioClevrganSplit.edit_word_spans`` finds it from the caption's phrases
(``audio_clevrgan.captions.attribute_word_owners``: which object each attribute word names) and espeak-ng's word
frames. Before, it took a word only where the caption names the value once (a word that another object's description
or a back-reference repeats was left out, its edit compared on the whole caption). This script counts, over every
object of every training caption and per attribute, the share whose word each rule finds within the audio the
model hears (the ``audio_frames`` crop): about the share of one-attribute edits given a word, since an edit may
change any object (the captions the task cuts to one isolated word are counted whole here; in training their word
is the whole anchor)::

    PYTHONPATH=examples python benchmarks/word_spans.py [--data data/audio-clevrgan] [--frames 768] [--out FILE.md]

The word frames are read from the data's cache (``cache/word-frames-*.json``), or spoken again on first use
(about 100 s for 8,500 captions on one thread).
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from audio_clevrgan.captions import ATTRIBUTES, attribute_word_owners  # noqa: E402
from audio_clevrgan.dataset import content_digest, read_dataset  # noqa: E402
from audio_clevrgan.word_frames import cached_attribute_word_frames, own_word_frames  # noqa: E402
from negmine.experiment import machine_record  # noqa: E402


def coverage(rows: list[dict], frames: list[list[tuple[str, str, int, int]]],
             crop: int) -> tuple[dict[str, dict[str, int]], int]:
    """(per attribute: ``objects`` (every object of every row), ``named_once`` (its value's word said once in the
    caption, within the first ``crop`` frames) and ``own_word`` (the task's rule, :func:`own_word_frames`: the first
    word of its own description naming the value lies within the crop); the number of rows whose espeak words differ
    from the text's, which count in neither)."""
    out = {a: {"objects": 0, "named_once": 0, "own_word": 0} for a in ATTRIBUTES}
    misaligned = 0
    for row, said in zip(rows, frames, strict=True):
        owners = attribute_word_owners(row["caption"], row["objects"])
        aligned = len(owners) == len(said)
        misaligned += not aligned
        for k, obj in enumerate(row["objects"]):
            for attribute in ATTRIBUTES:
                counts = out[attribute]
                counts["objects"] += 1
                if not aligned:
                    continue
                named = [lo for a, v, lo, _ in said if (a, v) == (attribute, obj[attribute])]
                counts["named_once"] += len(named) == 1 and named[0] < crop
                own = own_word_frames(said, owners, attribute, obj[attribute], k)
                counts["own_word"] += own is not None and own[0] < crop
    return out, misaligned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "audio-clevrgan")
    parser.add_argument("--frames", type=int, default=768, help="the audio crop (the cpu profile's audio_frames)")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args()
    _, rows = read_dataset(args.data)
    train = [r for r in rows if r["split"] == "train"]
    counts, misaligned = coverage(train, cached_attribute_word_frames(args.data, train), args.frames)
    lines = ["| attribute | objects | value named once | the object's own word |", "|---|---|---|---|"]
    for attribute in ATTRIBUTES:
        c = counts[attribute]
        lines.append(f"| {attribute} | {c['objects']} | {100 * c['named_once'] / c['objects']:.1f}% "
                     f"| {100 * c['own_word'] / c['objects']:.1f}% |")
    table = "\n".join(lines)
    footer = (f"\n\n{len(train)} training captions, crop {args.frames} frames; rows whose espeak words differ from "
              f"the text's: {misaligned}. Data {content_digest(args.data)}; machine "
              f"{platform.machine()}; commit {machine_record()['commit']}.")
    print(table + footer)
    if args.out:
        args.out.write_text(f"# Words localize = \"word\" can find (benchmarks/word_spans.py)\n\n"
                            f"```bash\nPYTHONPATH=examples python benchmarks/word_spans.py --out {args.out}\n```\n\n"
                            f"{__doc__.split(chr(10) + chr(10))[1].rstrip(':')}.\n\n{table}{footer}\n")


if __name__ == "__main__":
    main()
