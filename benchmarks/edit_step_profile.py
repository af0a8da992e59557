"""Where the time of a training step goes, for any run's configuration (cProfile over a few steps, one thread).

    python benchmarks/edit_step_profile.py RUN_DIR/config.json --init CHECKPOINT [--steps 12] [--threads 1]

Trains the configuration's first stage for ``--steps`` steps from ``--init`` (a checkpoint whose model already
retrieves, so that the edits look where a trained model looks), with every group at its full weight (no fade-in),
no evaluation and no checkpoints, in a temporary run directory. Prints the seconds per step and the share of the
step's time spent in the parts that matter for the edit generators: the edit generators' ``mine`` (drawing the
edits), the task's segmenter reading them (``describe_images``: ``drop_still_true`` / ``keep_changes``), the
backward pass, and the rest; stage start (e.g. ``concepts = "task"`` dissecting the GAN) is reported apart.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch


def cumulative(stats: pstats.Stats, file_part: str, function: str) -> float:
    """Cumulative seconds of the functions named ``function`` in files whose path contains ``file_part``."""
    return sum(v[3] for (path, _line, name), v in stats.stats.items() if file_part in path and name == function)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="a run's config.json")
    parser.add_argument("--init", required=True, type=Path, help="checkpoint to start from")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from negmine.config import build_task, build_task_config
    from negmine.plugins import get_plugin_manager
    from negmine.trainer import Trainer

    cfg = json.loads(args.config.read_text())
    stage = {k: v for k, v in dict(cfg["stages"][0], steps=args.steps, init=str(args.init)).items()
             if k not in ("group_weights_start", "group_weights_ramp")}
    raw = {k: cfg[k] for k in ("task", "profile", "seed", "task_options")}
    raw.update(run_dir=tempfile.mkdtemp(prefix="edit-step-profile-"), eval_every=0, checkpoint_every=0, log_every=1,
               eval_size=16, stages=[stage])
    pm = get_plugin_manager()
    task = build_task(pm, raw)
    trainer = Trainer(task, build_task_config(pm, task, raw, source="profile"), plugins=pm, reporter=None)
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    trainer.fit()
    profile.disable()
    total = time.perf_counter() - started
    stats = pstats.Stats(profile)
    steps = cumulative(stats, "negmine/trainer.py", "_train_step")
    parts = {
        "edit generators (mine), of which": cumulative(stats, "negmine_gan", "mine")
        + cumulative(stats, "audio_clevrgan/oracle.py", "mine"),
        "  the segmenter reading the edits": cumulative(stats, "audio_clevrgan/dataset.py", "describe_images"),
        "backward pass": cumulative(stats, "torch/_tensor.py", "backward"),
    }
    start = cumulative(stats, "negmine/plugins.py", "stage_start")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} "
          f"thread(s); {args.steps} steps of {args.config}\n")
    print("| part | s per step | share of the step |\n|---|---|---|")
    print(f"| **whole step** | {steps / args.steps:.2f} | 100% |")
    rest = steps - parts["edit generators (mine), of which"] - parts["backward pass"]
    for name, seconds in (*parts.items(), ("the rest (batch, forward passes, loss, optimiser)", rest)):
        print(f"| {name} | {seconds / args.steps:.2f} | {100 * seconds / steps:.0f}% |")
    print(f"\nstage start (once per stage): {start:.1f} s; whole run {total:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
