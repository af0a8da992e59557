"""How many embedding units an Audio CLEVRGAN model uses, and what gan-targeted's concept clustering makes of them.

Usage::

    python benchmarks/embedding_usage.py RUN_DIR [RUN_DIR ...] [--checkpoint best] [--pairs 3000]

For each run: the image units non-zero for some image and position of the first 200 training pairs (dead ReLU units
never are), the units that ever pass their 99th percentile in the concept datapoints d = A[:, t*] * I[:, h*, w*] of
the first ``--pairs`` training pairs (the units the clustering can group), and the clusters of four or more units
kept by ``cluster_units`` at several K (the paper's 250/512 of the width first).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--checkpoint", default="best", help="checkpoint name or .pt path (per run)")
    parser.add_argument("--pairs", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from negmine.evaluate import load_run
    from negmine.plugins import get_plugin_manager
    from negmine_gan.concepts import cluster_units, peak_datapoints

    pm = get_plugin_manager()
    print("| run | checkpoint (step) | live image units | units firing in datapoints | clusters of >= 4 units kept at K |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        task, config, state = load_run(pm, Path(run), args.checkpoint, "cpu")
        model = task.model.eval()
        with torch.no_grad():
            first = task.train.batch(torch.arange(200))
            image = model.encode(0, first.a).values
            live = int(image.transpose(0, 1).reshape(image.shape[1], -1).ne(0).any(1).sum())
            points = []
            for start in range(0, args.pairs, 100):
                batch = task.train.batch(torch.arange(start, min(args.pairs, start + 100)))
                d, _, _ = peak_datapoints(model, model.encode(0, batch.a), model.encode(1, batch.b))
                points.append(d)
        d = torch.cat(points)
        width = d.shape[1]
        firing = int((d > torch.quantile(d, 0.99, dim=0) + 1e-7).any(0).sum())
        kept = []
        for k in (round(250 / 512 * width), round(0.17 * width), round(0.1 * width)):
            sizes = sorted(((cluster_units(d, k) > 0).sum(1)).tolist(), reverse=True)
            kept.append(f"K={k}: {len([s for s in sizes if s < width])} {sizes if sizes[0] < width else '(one of all)'}")
        print(f"| {run} | {args.checkpoint} ({state.get('global_step')}) | {live} of {image.shape[1]} | {firing} of "
              f"{width} | {'; '.join(kept)} |")


if __name__ == "__main__":
    main()
