"""Training step time with the faiss generator's index rebuilt synchronously vs in the background (refresh=async).

Usage:
    python benchmarks/corpus_scale_async.py [--n 50000] [--steps 100] [--refresh-every 10] [--threads 1]
        [--async-threads 1] [--modes sync,async,async-lag] [--repeats 2] [--out FILE]

A real training run (``negmine.Trainer``, CPU) of a two-tower MLP (64 -> hidden -> 64 per side, cosine score) on N
synthetic pairs (a Gaussian mixture of N/100 components, side a = side b + noise), faiss negatives only (exact Flat
index, k = 1 of 32 candidates, re-scored on the cached corpus encodings, recall check of 256 queries at each build),
index rebuilt every ``refresh_every`` steps. Modes, each in a fresh process with the same seed:

- ``sync``: the rebuild runs inside the step (``refresh=sync``);
- ``async``: in a background thread, swapped in when ready (``refresh=async``, no lag);
- ``async-lag``: in a background thread, swapped in exactly ``refresh_every`` steps later (``async_lag``).

Step times are the trainer's own (``steps_per_s`` on every step, the step-end hooks included, so a synchronous
rebuild lands in the step that triggers it); the training loop time is their sum (the stage start's build and the
evaluations are outside it). Each mode runs ``repeats`` times, the modes alternating; the table shows the fastest
run of each (and every run's loop time). Ratio = the sync loop time / the mode's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(mode: str, n: int, steps: int, every: int, hidden: int, batch: int, threads: int, async_threads: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "plugins"))
    from negmine import CosineScore, DualEncoder, Embedding, Task, TensorPairs, Trainer
    from negmine.trainer import PlainReporter
    from negmine_faiss.generator import FaissNegatives, import_faiss

    torch.set_num_threads(threads)
    import_faiss().omp_set_num_threads(threads)

    class Towers(DualEncoder):
        def __init__(self, d_in: int = 64, d: int = 64):
            super().__init__(CosineScore())
            self.towers = torch.nn.ModuleList(
                torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, d))
                for _ in range(2))

        def encode(self, side, inputs):
            return Embedding(self.towers[side](inputs))

    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(max(1, n // 100), 64, generator=gen)
    b = centres[torch.randint(0, centres.shape[0], (n + 500,), generator=gen)] + torch.randn(n + 500, 64, generator=gen)
    a = b + 0.3 * torch.randn(b.shape, generator=gen)
    torch.manual_seed(0)
    task = Task("async-bench", Towers(), TensorPairs(a[:n], b[:n]), TensorPairs(a[n:], b[n:]),
                provides=frozenset({"corpus"}))
    faiss_opts = {"index": "Flat", "k": 1, "candidates": 32, "refresh_every": every, "recall_sample": 256,
                  "encode_batch": 4096}
    if mode != "sync":
        faiss_opts.update(refresh="async", async_threads=async_threads)
    if mode == "async-lag":
        faiss_opts["async_lag"] = every
    config = {"steps": steps, "negatives": ["faiss"], "device": "cpu", "batch_size": batch, "optimizer": "adam",
              "lr": 1e-3, "eval_size": 500, "log_every": 1, "checkpoint_every": 0, "seed": 0,
              "generators": {"faiss": faiss_opts}}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        Trainer(task, config, generators=[FaissNegatives], run_dir=Path(tmp) / "run",
                reporter=PlainReporter(quiet=True), plugins=_plugins()).fit()
        wall = time.perf_counter() - t0
        lines = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    rows = [m for m in lines if "loss" in m]
    step_s = [1 / m["steps_per_s"] for m in rows]
    refreshes = [m for m in rows if "faiss/refresh_s" in m][1:]  # the stage start's build is outside the loop
    staleness = [m["faiss/staleness"] for m in rows if "faiss/staleness" in m]
    return {
        "mode": mode, "loop_s": sum(step_s), "wall_s": wall, "median_ms": 1e3 * statistics.median(step_s),
        "max_ms": 1e3 * max(step_s), "builds": len(refreshes),
        "build_s": statistics.mean(m["faiss/refresh_s"] for m in refreshes) if refreshes else float("nan"),
        "wait_s": statistics.mean(m.get("faiss/refresh_wait_s", m["faiss/refresh_s"]) for m in refreshes)
        if refreshes else float("nan"),
        "staleness_mean": statistics.mean(staleness) if staleness else float("nan"),
        "staleness_max": max(staleness) if staleness else float("nan"),
        "final_loss": rows[-1]["loss"],
    }


def _plugins():
    from negmine.plugins import get_plugin_manager

    return get_plugin_manager()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--refresh-every", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--async-threads", type=int, default=1)
    parser.add_argument("--modes", default="sync,async,async-lag", help="the first is the ratio's reference")
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode, alternating; the best is reported")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    shape = (args.n, args.steps, args.refresh_every, args.hidden, args.batch, args.threads, args.async_threads)
    if args.one:
        print(json.dumps(one(args.one, *shape)))
        return
    from negmine.experiment import machine_record

    commit = machine_record()['commit']
    import faiss
    import torch

    modes = args.modes.split(",")
    load = os.getloadavg()
    lines = [
        "## Step time with and without an asynchronous refresh",
        "",
        f"- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`",
        f"- machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; {args.threads} thread(s) "
        f"for training, {args.async_threads} for the background build; load average at start "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"- python {platform.python_version()}, torch {torch.__version__}, faiss {faiss.__version__}; "
        f"git commit {commit.strip()}",
        f"- N = {args.n:,} pairs, MLP towers 64-{args.hidden}-64, batch {args.batch}, {args.steps} steps, Flat "
        f"index rebuilt every {args.refresh_every} steps (both sides, recall check of 256 queries)",
        "",
        f"| mode | loop (s): best of {args.repeats} (each run) | ratio {modes[0]}/mode | median step (ms) | "
        "slowest step (ms) | builds | build (s) | "
        "training thread per build (s) | staleness mean / max | final loss |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for _ in range(args.repeats):  # the modes alternate, so that a change in the machine's load hits each alike
        for mode in modes:
            cmd = [sys.executable, __file__, "--one", mode, "--n", str(args.n), "--steps", str(args.steps),
                   "--refresh-every", str(args.refresh_every), "--hidden", str(args.hidden), "--batch",
                   str(args.batch), "--threads", str(args.threads), "--async-threads", str(args.async_threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            runs[mode].append(json.loads(out.splitlines()[-1]))
    best = {mode: min(rs, key=lambda r: r["loop_s"]) for mode, rs in runs.items()}
    for mode in modes:
        r = best[mode]
        ratio = best[modes[0]]["loop_s"] / r["loop_s"]
        loops = ", ".join(f"{x['loop_s']:.2f}" for x in runs[mode])
        stale = "-" if r["staleness_max"] != r["staleness_max"] else f"{r['staleness_mean']:.1f} / {r['staleness_max']}"
        row = (f"| {mode} | {r['loop_s']:.2f} ({loops}) | {ratio:.2f} | {r['median_ms']:.1f} | {r['max_ms']:.0f} | "
               f"{r['builds']} | {r['build_s']:.2f} | {r['wait_s']:.3f} | {stale} | {r['final_loss']:.4f} |")
        lines.append(row)
        print(row, flush=True)
    load = os.getloadavg()
    lines += ["", f"Load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}."]
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
