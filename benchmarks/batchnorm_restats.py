"""Does an image tower's BatchNorm state explain a run's recall? Re-estimate it on clean training images and compare.

Usage::

    python benchmarks/batchnorm_restats.py RUN_DIR[:CHECKPOINT] [...] [--batches 40]

Edited negatives go through the image tower in a forward pass of their own, so its BatchNorm layers see batches of
edits during training. For each run: validation mean R@10 (500 pairs) as trained, then with the image tower's running
statistics reset and re-estimated (cumulative average) on ``--batches`` random batches of 64 clean training images,
and how far the running means moved (mean |change| / running std, per BatchNorm layer).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="RUN_DIR or RUN_DIR:CHECKPOINT (default checkpoint: best)")
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from negmine.evaluate import load_run
    from negmine.plugins import get_plugin_manager
    from negmine.trainer import evaluate_retrieval

    pm = get_plugin_manager()
    dev = torch.device("cpu")
    print("| run | checkpoint (step) | val R@10 as trained | after re-estimation | running-mean shift / std per layer |")
    print("|---|---|---|---|---|")
    for spec in args.runs:
        run, _, checkpoint = spec.partition(":")
        task, _, state = load_run(pm, Path(run), checkpoint or "best", "cpu")
        model = task.model
        before = evaluate_retrieval(model, task.val, 500, dev, batch_size=64)["mean@10"]
        layers = [m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and "image" in n]
        saved = [(m.running_mean.clone(), m.running_var.clone()) for m in layers]
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
        model.train()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for _ in range(args.batches):
                model.encode(0, task.train.batch(torch.randint(len(task.train), (64,), generator=g)).a)
        model.eval()
        after = evaluate_retrieval(model, task.val, 500, dev, batch_size=64)["mean@10"]
        shift = [float(((m.running_mean - mean).abs() / var.sqrt()).mean())
                 for m, (mean, var) in zip(layers, saved, strict=True)]
        print(f"| {run} | {checkpoint or 'best'} ({state.get('global_step')}) | {100 * before:.1f} | {100 * after:.1f} | "
              f"{', '.join(f'{s:.3f}' for s in shift)} |")


if __name__ == "__main__":
    main()
