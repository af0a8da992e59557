"""Training-step time of the GAN-edit generators against the random baseline, with the tries histogram.

Usage::

    python benchmarks/gan_edit_step.py --data DATA_DIR --init RUN_DIR [--steps 30] [--out FILE.md]

DATA_DIR is an Audio CLEVRGAN dataset built from the GAN (``negmine data build audio-clevrgan``); RUN_DIR a trained
``audio-clevrgan`` run whose best checkpoint initialises every method (edits need a model whose matchmaps point at
objects). Each method trains ``--steps`` steps (cpu profile, batch 64) in the same process; the time of a step counts
mining, editing, encoding the edits and the update. Stage start (for gan-targeted: concepts and dissection) is timed
separately. Prints a Markdown table (and writes it with ``--out``) with the command, machine and commit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402

from negmine.experiment import machine_record  # noqa: E402

WARM = {"warm_start": 0.5}
METHODS = {
    "random (DaveNet)": {"negatives": ["random"]},
    "random + gan-random": {"negatives": ["random", "gan-random"]},
    "random + gan-random, warm start": {"negatives": ["random", "gan-random"], "generators": {"gan-random": WARM}},
    "random + gan-targeted": {"negatives": ["random", "gan-targeted"]},
    "random + gan-targeted, warm start": {"negatives": ["random", "gan-targeted"],
                                          "generators": {"gan-targeted": WARM}},
    "random + gan-targeted, warm start 0.8": {"negatives": ["random", "gan-targeted"],
                                              "generators": {"gan-targeted": {"warm_start": 0.8}}},
    "random + gan-random, warm start, half the anchors": {
        "negatives": ["random", "gan-random"], "generators": {"gan-random": {**WARM, "edit_fraction": 0.5}}},
    "random + gan-targeted, warm start, half the anchors": {
        "negatives": ["random", "gan-targeted"], "generators": {"gan-targeted": {**WARM, "edit_fraction": 0.5}}},
    # the edits in a forward pass of their own (the only encoding before commit 9435cb4): what joint encoding costs
    "random + gan-targeted, warm start, half the anchors, separate encoding": {
        "negatives": ["random", "gan-targeted"], "generators": {"gan-targeted": {**WARM, "edit_fraction": 0.5}},
        "negative_encoding": "separate"},
}


def time_method(pm, data: str, init: Path, stage: dict, steps: int, seed: int, max_train: int) -> dict:
    from negmine.config import build_task, build_task_config
    from negmine.trainer import Trainer

    run_dir = Path(tempfile.mkdtemp(prefix="bench-gan-step-"))
    raw = {"task": "audio-clevrgan", "profile": "cpu", "seed": seed, "run_dir": str(run_dir), "eval_every": 0,
           "checkpoint_every": 0, "log_every": 1, "eval_size": 16,
           "task_options": {"data_dir": data, "max_train": max_train},
           "stages": [dict(stage, name="bench", steps=steps, init=str(init / "checkpoints" / "best.pt"))]}
    task = build_task(pm, raw)
    config = build_task_config(pm, task, raw, source="benchmark")
    trainer = Trainer(task, config, plugins=pm, reporter=None)
    started = time.perf_counter()
    trainer.fit()
    total = time.perf_counter() - started
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r and r.get("event") != "eval"]
    # steps_per_s is measured over each logging window (one step). The first epoch fills the cache of generated
    # positives; later epochs show the steady state of a long run (every image generated once).
    epoch = max(1, max_train // 64)
    first = [1.0 / r["steps_per_s"] for r in train[1:epoch] if r.get("steps_per_s")]
    steady = [1.0 / r["steps_per_s"] for r in train[epoch:] if r.get("steps_per_s")]
    tries = [r[k] for r in train for k in r if k.endswith("/tries_mean")]
    levels = [r[k] for r in train[epoch:] for k in r if k.endswith("/start_level")]
    hist: dict[int, int] = {}
    for r in train[epoch:]:
        for k, v in r.items():
            if "/tries_hist/" in k:
                t = int(k.rsplit("/", 1)[1])
                hist[t] = hist.get(t, 0) + int(v)
    return {"first_s": median(first), "step_s": median(steady), "total_s": total, "steps": steps,
            "tries_mean": sum(tries) / len(tries) if tries else None, "tries_hist": hist,
            "start_level": sum(levels) / len(levels) if levels else None}


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--init", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--max-train", type=int, default=640, help="training pairs (an epoch is max_train / 64 steps)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from negmine.plugins import get_plugin_manager

    pm = get_plugin_manager()
    results = {name: time_method(pm, args.data, args.init, stage, args.steps, args.seed, args.max_train)
               for name, stage in METHODS.items()}
    base = results["random (DaveNet)"]["step_s"]
    lines = [
        "# GAN-edit generators: training-step time",
        "",
        f"- command: `python benchmarks/gan_edit_step.py {' '.join(sys.argv[1:])}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()} (CPU only)",
        f"- commit: {machine_record()['commit']}",
        f"- audio-clevrgan cpu profile, batch 64, {args.steps} steps per method from the same checkpoint on the "
        f"first {args.max_train} training pairs (an epoch is {args.max_train // 64} steps); median seconds per step "
        "in the first epoch (the first step excluded) and after it (every generated positive cached: the steady "
        "state of a long run); tries and their histogram after the first epoch; warm start = 0.5 unless named; "
        "edits encoded in one pass with the batch's images (negative_encoding = joint, the default) unless named; "
        "the whole run "
        "includes stage start (gan-targeted computes concepts and dissects the GAN there)",
        "",
        "| method | s / step, first epoch | s / step, steady | ratio to random (steady) | whole run (s) | "
        "mean tries per edit | mean first level | tries histogram (tries: edits) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        tries = "-" if r["tries_mean"] is None else f"{r['tries_mean']:.2f}"
        level = "-" if r["start_level"] is None else f"{r['start_level']:.1f}"
        hist = ", ".join(f"{t}: {c}" for t, c in sorted(r["tries_hist"].items()) if c) or "-"
        lines.append(f"| {name} | {r['first_s']:.3f} | {r['step_s']:.3f} | {r['step_s'] / base:.2f}x | "
                     f"{r['total_s']:.0f} | {tries} | {level} | {hist} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
