"""How hard the drawn negatives stay over training, read from the runs' training logs (no model is run).

Usage::

    python benchmarks/edit_hardness.py RUN_DIR [...] [--window 200] [--out benchmarks/results/edit_hardness.md]

For each run with an input-negative source on side 0 (a GAN edit generator, ``render-edit``, ``gan-scene-edit``),
from its ``metrics.jsonl`` log lines, in the first and the last quarter of the run's steps:

- the edit gap: (positive score − the edits' mean score) / the batch's score std, the distance the model already
  keeps between an image and its edits, in units of its score spread;
- the random gap: the same for the random in-batch negatives, for scale;
- active: the share of the edits whose hinge is still active (the edit scores within the margin of the positive);
- the update ratio: how far one step moves the weights (|delta w| / |w|), the median over the quarter.

With ``--window N``, a second table: the active share in each window of N steps (steps as logged: a stage's own).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

EDIT_PREFIXES = ("gan-random", "gan-targeted", "render-edit", "gan-scene-edit")


def quarter_stats(rows: list[dict], source: str) -> dict[str, float]:
    def mean(values: list[float]) -> float:
        return statistics.fmean(values) if values else float("nan")

    return {
        "edit_gap": mean([(r["positive_score"] - r[f"{source}/side0/mean_score"]) / r["score_std"] for r in rows
                          if f"{source}/side0/mean_score" in r]),
        "random_gap": mean([(r["positive_score"] - r["random/side0/mean_score"]) / r["score_std"] for r in rows
                            if "random/side0/mean_score" in r]),
        "active": mean([r[f"{source}/side0/active"] for r in rows if f"{source}/side0/active" in r]),
        "update": statistics.median([r["update_ratio"] for r in rows if "update_ratio" in r] or [float("nan")]),
    }


def measure(run_dir: Path) -> dict | None:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "positive_score" in r and "score_std" in r]
    source = next((p for p in EDIT_PREFIXES if any(f"{p}/side0/mean_score" in r for r in rows)), None)
    if source is None or len(rows) < 4:
        return None
    q = len(rows) // 4
    return {"run": str(run_dir), "source": source, "first": quarter_stats(rows[:q], source),
            "last": quarter_stats(rows[-q:], source)}


def active_by_window(run_dir: Path, window: int) -> tuple[str, list[float]] | None:
    """(source, the mean active share in each ``window`` steps: (0, window], (window, 2 window], ...)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    source = next((p for p in EDIT_PREFIXES if any(f"{p}/side0/active" in r for r in rows)), None)
    if source is None:
        return None
    key = f"{source}/side0/active"
    points = [(int(r["step"]), float(r[key])) for r in rows if key in r and "step" in r]
    last = max(step for step, _ in points)
    return source, [statistics.fmean([v for step, v in points if lo < step <= lo + window] or [float("nan")])
                    for lo in range(0, last, window)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--window", type=int, default=0, help="also the active share per this many steps")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines = ["| run | source | edit gap / std, first → last quarter | random gap / std | edits active | "
             "update ratio |", "|---|---|---|---|---|---|"]
    for run in args.runs:
        m = measure(run)
        if m is None:
            lines.append(f"| {run} | no input negatives on side 0 in its log | | | | |")
            continue
        f, last = m["first"], m["last"]
        lines.append(f"| {run} | {m['source']} | {f['edit_gap']:.2f} → {last['edit_gap']:.2f} | "
                     f"{f['random_gap']:.2f} → {last['random_gap']:.2f} | {100 * f['active']:.1f}% → "
                     f"{100 * last['active']:.1f}% | {f['update']:.4f} → {last['update']:.4f} |")
    if args.window > 0:
        lines += ["", f"| run | source | edits active per {args.window} steps |", "|---|---|---|"]
        for run in args.runs:
            got = active_by_window(run, args.window)
            if got is not None:
                lines.append(f"| {run} | {got[0]} | " + ", ".join(f"{v:.2f}" for v in got[1]) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
