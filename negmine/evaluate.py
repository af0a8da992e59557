"""Evaluate a finished (or running) run directory: retrieval recall plus every evaluation its task provides."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from negmine import checkpoint as ckpt
from negmine.errors import NegmineError, UnknownNameError
from negmine.trainer import _resolve_device, evaluate_retrieval


def load_run(pm: Any, run_dir: Path, checkpoint: str = "best", device: str = "cpu",
             task_options: dict[str, Any] | None = None) -> tuple[Any, dict, dict]:
    """Rebuild a run's task from its config.json and load a checkpoint into its model.

    task_options: overrides of the run's task options (e.g. ``data_dir`` after the data moved).
    Returns (task, config dict, checkpoint state).
    """
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise NegmineError(f"{str(run_dir)!r} is not a run directory: {str(cfg_path)!r} is missing")
    config = json.loads(cfg_path.read_text())
    spec = pm.task(config["task"])
    for key in task_options or {}:
        if key not in spec.options:
            raise UnknownNameError(f"option of task {spec.name!r}", key, spec.options)
    options = {**(config.get("task_options") or {}), **(task_options or {})}
    task = spec.build(profile=config["profile"] or spec.default_profile, seed=config["seed"], options=options)
    if checkpoint.endswith(".pt"):
        path = Path(checkpoint)
    else:
        path = run_dir / "checkpoints" / f"{checkpoint}.pt"
        if not path.is_file():
            names = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt"))
            raise UnknownNameError("checkpoint", checkpoint, names)
    state = ckpt.load(path)
    task.model.load_state_dict(state["model"])
    task.model.to(device)
    return task, config, state


def evaluate_run(pm: Any, run_dir: Path, split: str = "test", checkpoint: str = "best", size: int | None = None,
                 device: str = "auto", task_options: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """Evaluate ``run_dir`` on ``split``; writes ``eval-<split>.json`` and ``report-<split>.md``; returns both.
    ``task_options`` override the run's (see :func:`load_run`)."""
    dev = torch.device(_resolve_device(device))
    task, config, state = load_run(pm, run_dir, checkpoint, dev, task_options)
    data = task.test if split == "test" else task.val
    if data is None:
        raise NegmineError(f"task {task.name!r} has no {split} split")
    n = size or min(len(data), int(config.get("eval_size", 500)))
    started = time.perf_counter()
    results: dict[str, Any] = {
        "run_dir": str(run_dir),
        "task": task.name,
        "profile": config.get("profile"),
        "checkpoint": checkpoint,
        "checkpoint_step": state.get("global_step"),
        "split": split,
        "retrieval": evaluate_retrieval(task.model, data, n, dev, batch_size=int(config.get("batch_size", 64))),
    }
    for name, fn in task.evaluators.items():
        results[name] = fn(model=task.model, task=task, run_dir=run_dir, device=dev, split=split)
    results["seconds"] = round(time.perf_counter() - started, 2)
    (run_dir / f"eval-{split}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    report = render_report(results, task.model.sides)
    (run_dir / f"report-{split}.md").write_text(report + "\n")
    return results, report


def render_report(results: dict[str, Any], sides: tuple[str, str]) -> str:
    r = results["retrieval"]
    a, b = sides
    lines = [
        f"# Evaluation of {results['run_dir']}",
        "",
        f"task `{results['task']}` (profile `{results['profile']}`), checkpoint `{results['checkpoint']}` "
        f"(step {results['checkpoint_step']}), split `{results['split']}`, {r['n']} pairs",
        "",
        "| direction | R@1 | R@5 | R@10 |",
        "|---|---|---|---|",
        f"| {b} → {a} | {r['b2a@1']:.3f} | {r['b2a@5']:.3f} | {r['b2a@10']:.3f} |",
        f"| {a} → {b} | {r['a2b@1']:.3f} | {r['a2b@5']:.3f} | {r['a2b@10']:.3f} |",
        f"| mean | {r['mean@1']:.3f} | {r['mean@5']:.3f} | {r['mean@10']:.3f} |",
    ]
    for name, value in results.items():
        if name in ("retrieval", "run_dir", "task", "profile", "checkpoint", "checkpoint_step", "split", "seconds"):
            continue
        lines += ["", f"## {name}", ""]
        if isinstance(value, dict) and "markdown" in value:
            lines.append(value["markdown"])
        else:
            lines.append("```\n" + json.dumps(value, indent=2, default=str) + "\n```")
    return "\n".join(lines)
