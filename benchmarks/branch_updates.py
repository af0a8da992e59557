"""Where the first steps of a stage move the weights: a negmine plugin that records, for the first N steps, how far
each parameter tensor moved (RMS(delta) / lr and max |delta| / lr) and the quantiles of |delta| / lr over all
weights, then writes ``branch_updates.json`` in the run directory and prints a table.

Used to look at the Hard Neg collapse (examples/audio_clevrgan/results/paper-cpu.md): the same branch from DaveNet's
step 800 (seed 1, which collapses), with DaveNet's Adam state continued or a fresh Adam; results in
benchmarks/results/branch_updates.md::

    negmine train benchmarks/branch_updates/davenet-s1.toml -q       # DaveNet seed 1 to step 800 (about 13 min)
    negmine -p benchmarks/branch_updates.py train benchmarks/branch_updates/hardneg-s1-continued.toml -q
    negmine -p benchmarks/branch_updates.py train benchmarks/branch_updates/hardneg-s1-fresh.toml -q

NEGMINE_BRANCH_STEPS (default 10) sets N.
"""

from __future__ import annotations

import json
import os

import torch

from negmine import hookimpl

_STATE: dict = {}


def _snapshot(trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


@hookimpl
def negmine_stage_start(trainer, stage):
    _STATE.update(previous=_snapshot(trainer), rows=[], steps=int(os.environ.get("NEGMINE_BRANCH_STEPS", "10")))


@hookimpl
def negmine_step_end(trainer, step, metrics):
    if len(_STATE["rows"]) >= _STATE["steps"]:
        return
    lr = trainer.optimizer.param_groups[0]["lr"]
    now = _snapshot(trainer)
    per_tensor, moved = {}, []
    for name, value in now.items():
        delta = (value - _STATE["previous"][name]).abs().flatten() / lr
        per_tensor[name] = {"rms": float(delta.pow(2).mean().sqrt()), "max": float(delta.max())}
        moved.append(delta)
    everything = torch.cat(moved)
    sample = everything[torch.randperm(everything.numel(), generator=torch.Generator().manual_seed(0))[:200_000]]
    quantiles = torch.quantile(sample, torch.tensor([0.5, 0.9, 0.99, 0.999])).tolist()
    _STATE["rows"].append({"step": step, "lr": lr, "q50": quantiles[0], "q90": quantiles[1], "q99": quantiles[2],
                           "q999": quantiles[3], "max": float(everything.max()),
                           "score_std": metrics.get("score_std"), "per_tensor": per_tensor})
    _STATE["previous"] = now


@hookimpl
def negmine_train_end(trainer, summary):
    rows = _STATE["rows"]
    (trainer.run_dir / "branch_updates.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("step | |delta|/lr: median | 90% | 99% | 99.9% | max | score std")
    for r in rows:
        print(f"{r['step']} | {r['q50']:.2f} | {r['q90']:.2f} | {r['q99']:.2f} | {r['q999']:.2f} | {r['max']:.2f} | "
              f"{r['score_std']:.2f}")
    names = list(rows[0]["per_tensor"]) if rows else []
    mean_rms = {n: sum(r["per_tensor"][n]["rms"] for r in rows) / len(rows) for n in names}
    print("tensor | mean over the steps of RMS(delta)/lr | largest max |delta|/lr")
    for n in sorted(names, key=mean_rms.get, reverse=True)[:12]:
        print(f"{n} | {mean_rms[n]:.2f} | {max(r['per_tensor'][n]['max'] for r in rows):.2f}")
