"""Per swap direction, what a `negmine edits export` of shape swaps drew, as the export's segmenter read it.

Usage::

    python benchmarks/swap_directions.py EXPORT_DIR [EXPORT_DIR ...] [--default sphere]

For exports of ``gan-targeted`` swaps (``insert`` > 0, with or without ``steer``) on a task that describes images
(Audio CLEVRGAN): per direction (the value ablated, ``concept``, or the default, to the value inserted or
steered to, ``inserted``, or the default), the edits kept, how many the segmenter reads with an object changed to
the target shape, how many with that as the only change, and the mean confidence (lowest attribute probability) of
the object read as the target. The export's training options decide which edits were kept (``drop_still_true``,
``swap_cells``), so the counts are those a training step would use.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


def directions(export: Path, default: str) -> dict[str, list]:
    """{"source -> target": [kept, to target, only change, confidences]} of one export."""
    out: dict[str, list] = collections.defaultdict(lambda: [0, 0, 0, []])
    for line in (export / "edits.jsonl").read_text().splitlines():
        row = json.loads(line)
        source, target = row["concept"] or default, row["inserted"] or default
        change = row["detected_change"]
        hits = [c for c in change["changes"] if c.get("attribute") == "shape" and c.get("new") == target]
        tally = out[f"{source} -> {target}"]
        tally[0] += 1
        tally[1] += bool(hits)
        tally[2] += bool(hits) and change["single_attribute"]
        for c in hits:  # the edited object as read after the edit: the nearest object of the target shape
            o = row["objects_original"][c["object"]]
            near = min((p for p in row["objects_edited"] if p["shape"] == target),
                       key=lambda p: (p["x"] - o["x"]) ** 2 + (p["y"] - o["y"]) ** 2)
            tally[3].append(near["confidence"])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--default", default="sphere", help="the name of the value no unit draws")
    args = parser.parse_args(argv)
    lines = ["| export | direction | edits kept | to target | only change | confidence of the new shape |",
             "|---|---|---|---|---|---|"]
    for export in args.exports:
        table = directions(export, args.default)
        for name, (kept, hit, only, conf) in sorted(table.items()):
            mean = f"{sum(conf) / len(conf):.3f}" if conf else "-"
            lines.append(f"| {export.name} | {name} | {kept} | {hit} | {only} | {mean} |")
        kept, hit, only = (sum(v[i] for v in table.values()) for i in range(3))
        conf = [c for v in table.values() for c in v[3]]
        lines.append(f"| {export.name} | **all** | {kept} | {hit} | {only} | "
                     f"{sum(conf) / len(conf) if conf else float('nan'):.3f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
