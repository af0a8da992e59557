"""How often a GAN edit is still described by its anchor's caption: the false negatives of the edit generators.

An edit changes one object. With task option ``isolated_words`` a fifth of the training captions are one attribute
word ("metal"); another object of the image often holds the same value, and then the edited image is still "metal":
a false negative that pushes the word away from what it names. A full caption is still true of an edit in which the
segmenter reads no change at all. This script edits training pairs with trained runs' models (every anchor edited,
from the warm-start level each run reached, as ``negmine edits export``) and reports, as the task's resource
``caption_still_true`` reads them (what generator option ``drop_still_true`` drops):

- one-word anchors: the share of their edits that still hold the word's value;
- full captions: the share of their edits in which the segmenter reads no change;
- all anchors: the share of edits still described by their caption::

    PYTHONPATH=examples OMP_NUM_THREADS=1 python benchmarks/edit_false_negatives.py GENERATOR:RUN_DIR [...] \\
        [--n 384] [--out benchmarks/results/edit_false_negatives.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import torch  # noqa: E402

from negmine.evaluate import load_run  # noqa: E402
from negmine.experiment import machine_record  # noqa: E402
from negmine.plugins import get_plugin_manager  # noqa: E402
from negmine_gan.export import describe_change, export_edits  # noqa: E402


def measure(generator: str, run_dir: Path, n: int, checkpoint: str = "best") -> dict:
    """The shares above for ``n`` training pairs edited by ``generator`` with ``run_dir``'s model."""
    pm = get_plugin_manager()
    task, _config, state = load_run(pm, run_dir, checkpoint)
    train = task.train
    isolated = getattr(train, "isolated", None) or [None] * len(train)
    with tempfile.TemporaryDirectory() as tmp:
        summary = export_edits(pm, run_dir, Path(tmp), generator, n, split="train", checkpoint=checkpoint,
                               options={"edit_fraction": 1.0})
        rows = [json.loads(line) for line in (Path(tmp) / "edits.jsonl").read_text().splitlines()]
    one = [r for r in rows if isolated[r["id"]] is not None]
    full = [r for r in rows if isolated[r["id"]] is None]
    one_still = [any(o[isolated[r["id"]][0]] == isolated[r["id"]][1] for o in r["objects_edited"]) for r in one]
    full_still = [not describe_change(train.rows[r["id"]]["objects"], r["objects_edited"])["changed"] for r in full]
    share = lambda xs: sum(xs) / max(len(xs), 1)  # noqa: E731
    return {"generator": generator, "run": str(run_dir), "step": state.get("global_step"),
            "start_level": summary["start_level"], "one": len(one), "one_still": share(one_still),
            "full": len(full), "full_still": share(full_still), "all_still": share(one_still + full_still)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="GENERATOR:RUN_DIR, e.g. gan-targeted:runs/x/targeted-edits/seed-0")
    parser.add_argument("--n", type=int, default=384)
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    for spec in args.runs:
        generator, _, run = spec.partition(":")
        rows.append(measure(generator, Path(run), args.n, args.checkpoint))
    lines = [
        "# GAN edits still described by their anchor's caption (the edit generators' false negatives)",
        "",
        f"- command: `PYTHONPATH=examples OMP_NUM_THREADS=1 python benchmarks/edit_false_negatives.py "
        f"{' '.join(args.runs)} --n {args.n}`",
        f"- machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"Python {platform.python_version()}; {time.perf_counter() - started:.0f} s",
        f"- commit: {machine_record()['commit']}",
        f"- the first {args.n} training pairs, every anchor edited (`edit_fraction = 1`), the run's other generator "
        f"options and the warm-start level its checkpoint `{args.checkpoint}` reached; read by the attribute "
        "segmenter as the task's `caption_still_true` reads them",
        "",
        "| generator | run | step | start level | one-word anchors | ... edit still holds the word | full captions "
        "| ... no change read | all edits still described |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['generator']} | `{r['run']}` | {r['step']} | {r['start_level']} | {r['one']} | "
                     f"{100 * r['one_still']:.1f}% | {r['full']} | {100 * r['full_still']:.1f}% | "
                     f"{100 * r['all_still']:.1f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
