"""Does a run's BatchNorm state explain its recall? Re-estimate it on clean training pairs and evaluate again.

Usage::

    PYTHONPATH=examples python benchmarks/batchnorm_restats.py RUN_DIR[:CHECKPOINT] [...] [--batches 40] \\
        [--split val|test] [--towers image|both] [--attributes]

Edited negatives go through the image tower, in a forward pass of their own (``negative_encoding = "separate"``) or
together with the batch (``"joint"``), so its BatchNorm layers see batches with edits during training while
evaluation sees none. For each run: mean R@10 (500 pairs of ``--split``) as trained, then with the running statistics
of the image tower (or of both towers) reset and re-estimated (cumulative average) on ``--batches`` random batches of
64 clean training pairs, and how far the re-estimated running means moved (mean |change| / running std, per
BatchNorm layer). Training-mode forward passes never read running statistics, so a run trained with
``negative_encoding = "joint-clean"`` follows the same weights as ``"joint"`` and differs only in this state: the
re-estimate is what that option would have given the run (up to the running average's window and the choice of the
best checkpoint). ``--attributes`` also runs the task's ``attributes`` evaluation (Audio CLEVRGAN: the Table 1
protocol mean and the word in context) before and after.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch


def _attributes(task, model, split: str) -> tuple[float, float]:
    if "attributes" not in task.evaluators:
        raise SystemExit(f"--attributes: task {task.name!r} has no 'attributes' evaluation "
                         f"(it has: {', '.join(sorted(task.evaluators)) or 'none'})")
    with tempfile.TemporaryDirectory() as tmp:
        out = task.evaluators["attributes"](model=model, task=task, run_dir=Path(tmp), device=torch.device("cpu"),
                                            split=split)
    return out["mean"], out["context"]["mean"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="RUN_DIR or RUN_DIR:CHECKPOINT (default checkpoint: best)")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--split", choices=["val", "test"], default="val")
    parser.add_argument("--towers", choices=["image", "audio", "both"], default="image",
                        help="whose BatchNorm statistics to re-estimate (side 0 is the image tower, side 1 the audio)")
    parser.add_argument("--attributes", action="store_true", help="also the task's attributes evaluation")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from negmine.evaluate import load_run
    from negmine.plugins import get_plugin_manager
    from negmine.trainer import evaluate_retrieval

    pm = get_plugin_manager()
    dev = torch.device("cpu")
    head = f"| run | checkpoint (step) | {args.split} R@10 as trained | after re-estimation |"
    rule = "|---|---|---|---|"
    if args.attributes:
        head += " Table 1 mean as trained | after | in context as trained | after |"
        rule += "---|---|---|---|"
    print(head + f" {args.towers} running-mean shift / std per layer |")
    print(rule + "---|")
    for spec in args.runs:
        run, _, checkpoint = spec.partition(":")
        task, _, state = load_run(pm, Path(run), checkpoint or "best", "cpu")
        model = task.model.eval()
        data = task.val if args.split == "val" else task.test
        before = evaluate_retrieval(model, data, 500, dev, batch_size=64)["mean@10"]
        attrs_before = _attributes(task, model, args.split) if args.attributes else None
        layers = [m for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                  and args.towers in ("both", n.split(".")[0])]
        saved = [(m.running_mean.clone(), m.running_var.clone()) for m in layers]
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
        model.train()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for _ in range(args.batches):
                batch = task.train.batch(torch.randint(len(task.train), (64,), generator=g))
                if args.towers != "audio":
                    model.encode(0, batch.a)
                if args.towers != "image":
                    model.encode(1, batch.b)
        model.eval()
        after = evaluate_retrieval(model, data, 500, dev, batch_size=64)["mean@10"]
        shift = [float(((m.running_mean - mean).abs() / var.sqrt()).mean())
                 for m, (mean, var) in zip(layers, saved, strict=True)]
        row = f"| {run} | {checkpoint or 'best'} ({state.get('global_step')}) | {100 * before:.1f} | {100 * after:.1f} |"
        if attrs_before is not None:
            attrs_after = _attributes(task, model, args.split)
            row += "".join(f" {100 * x:.1f} |" for pair in zip(attrs_before, attrs_after, strict=True) for x in pair)
        print(row + f" {', '.join(f'{s:.3f}' for s in shift)} |", flush=True)


if __name__ == "__main__":
    main()
