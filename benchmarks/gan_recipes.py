"""GAN recipes for two CPU cores, compared at equal CPU time: quality read by two independent readers.

Each recipe is a ``GAN_PROFILES`` entry of ``audio_clevrgan.gan``. ``train`` trains each one (one thread, resumable)
until it has spent ``--cpu-seconds`` of process CPU time in training steps, writing a generator snapshot every
``--snapshot-every`` CPU seconds; CPU time, not wall time, is the budget, so recipes trained while other processes
share the machine are still compared fairly. ``report`` reads every snapshot with both attribute readers and prints
quality against CPU time (markdown), the readers' agreement on rendered scenes first::

    export PYTHONPATH=examples OMP_NUM_THREADS=1
    python benchmarks/gan_recipes.py train --recipes cpu-projected cpu-lite-r1 cpu-r1 --cpu-seconds 900 \\
        --features runs/gan15/features/segmenter.pt
    python benchmarks/gan_recipes.py report --recipes cpu-projected cpu-lite-r1 cpu-r1 \\
        --evaluator runs/gan15/evaluator/segmenter.pt > benchmarks/results/gan_recipes.md

On a GPU the same recipe trains with ``train --recipes cpu-scene-factored --device cuda --wall-seconds 600
--cpu-seconds 100000 --out runs/gan-recipes-cuda`` (measure steps/s in its ``log.jsonl`` first).

Reader 1 is the committed segmenter (U-Net, seed 0; it writes the captions of GAN images). Reader 2, the
evaluator, is a reader of another architecture (``DilatedReader``) trained with another seed; no GAN's training
and no negative generator ever uses it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import torch  # noqa: E402

from audio_clevrgan.quality import gan_quality, reader_agreement  # noqa: E402
from audio_clevrgan.train_scripts import load_gan, load_segmenter, train_gan  # noqa: E402
from negmine.experiment import machine_record  # noqa: E402

SEGMENTER = ROOT / "examples/audio_clevrgan/checkpoints/segmenter.pt"


def cmd_train(a: argparse.Namespace) -> None:
    for name in a.recipes:
        out = Path(a.out) / name
        t0 = time.time()
        # On a GPU the process's CPU time is not the cost: --wall-seconds bounds this call's wall time instead
        # (snapshots still follow CPU time, which a synchronous training loop spends about as fast as wall time).
        res = train_gan(
            out, steps=10**9, seed=a.seed, device=a.device, profile=name, bank_size=a.bank_size,
            max_cpu_seconds=a.cpu_seconds, max_seconds=a.wall_seconds, snapshot_cpu_every=a.snapshot_every,
            ckpt_every=a.ckpt_every, sample_every=10**9, threads=1, features=a.features, log_every=50,
            verbose=False,
        )
        print(f"{name}: {res['step']} steps, {res['cpu_seconds']:.0f} CPU s, {time.time() - t0:.0f} wall s",
              flush=True)


def _snapshots(run: Path, marks: list[int] | None = None) -> list[Path]:
    snaps = sorted(run.glob("generator_cpu*.pt"))
    if marks:
        snaps = [p for p in snaps if int(p.stem.removeprefix("generator_cpu")) in marks]
    return snaps


def _wall_seconds(meta: dict, log: list[dict]) -> float:
    """Wall seconds at a snapshot: recorded in it, else scaled from the last log row at or before its step (a
    snapshot taken after the last row, e.g. when the budget ran out between two log rows, has none after it)."""
    if "wall_seconds" in meta:
        return float(meta["wall_seconds"])
    before = [r for r in log if 0 < r["step"] <= meta["step"]]
    return before[-1]["t"] * meta["step"] / before[-1]["step"] if before else float("nan")


def cmd_report(a: argparse.Namespace) -> None:
    readers = {"reader 1 (segmenter)": load_segmenter(SEGMENTER), "reader 2 (evaluator)": load_segmenter(a.evaluator)}
    torch.set_num_threads(a.threads)
    t0 = time.time()
    print("# GAN recipes for two CPU cores, at equal CPU time\n")
    print(f"Commit {machine_record()['commit']}, {platform.machine()} `{platform.processor() or 'cpu'}`, torch {torch.__version__}, "
          f"{a.threads} thread(s); training ran with one thread each, CPU time = process time in training steps.\n")
    print("```bash\nexport PYTHONPATH=examples OMP_NUM_THREADS=1\n" + " ".join(sys.argv[:1]) + " train --recipes "
          + " ".join(a.recipes) + " ...\npython " + " ".join(sys.argv) + "\n```\n")
    agree = reader_agreement(readers["reader 1 (segmenter)"], readers["reader 2 (evaluator)"], n=a.n_ref)
    print("## The readers on rendered scenes\n")
    print(f"{a.n_ref} held-out rendered scenes (1-3 objects). Objects of the renderer matched by a detected object "
          "(centroid within 4 px) with all four attributes right, and objects read alike by both readers:\n")
    print("| reader | objects right | confident (p >= 0.9) |\n|---|---|---|")
    for k, key in (("reader 1 (segmenter)", "r1"), ("reader 2 (evaluator)", "r2")):
        print(f"| {k} | {100 * agree[key + '_object_acc']:.1f}% | {100 * agree[key + '_confident']:.1f}% |")
    print(f"\nBoth readers give the same four attributes to {100 * agree['agree']:.1f}% of the objects both detect "
          f"({agree['n_both']} objects).\n")
    print("## Quality against CPU time\n")
    print(f"GAN samples: `standard_z({a.n}, seed=1)`; confident = all four attributes at p >= 0.9; "
          "freq = largest |frequency difference| of an attribute value against the renderer's ground truth, pp.\n")
    print("| recipe | CPU s | steps | wall s | conf. r1 | shape r1 | conf. r2 | shape r2 | freq r2 | objects/img r2 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name in a.recipes:
        run = Path(a.out) / name
        log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
        for snap in _snapshots(run, a.cpu_marks):
            G = load_gan(snap)
            cpu, step = G.meta["cpu_seconds"], G.meta["step"]
            wall = _wall_seconds(G.meta, log)
            q = {k: gan_quality(G, r, n=a.n, n_ref=a.n_ref) for k, r in readers.items()}
            q1, q2 = q["reader 1 (segmenter)"], q["reader 2 (evaluator)"]
            row = {"recipe": name, "cpu_s": cpu, "step": step, "wall_s": wall, "r1": q1, "r2": q2}
            rows.append(row)
            print(f"| {name} | {cpu:.0f} | {step} | {wall:.0f} | {100 * q1['confident_fraction']:.1f}% | "
                  f"{100 * q1['confident_fraction_per_attribute']['shape']:.1f}% | "
                  f"{100 * q2['confident_fraction']:.1f}% | {100 * q2['confident_fraction_per_attribute']['shape']:.1f}% | "
                  f"{q2['max_abs_freq_diff_pp']:.1f} | {q2['objects_per_image']:.2f} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"agreement": agree, "rows": rows}, indent=1))
    print(f"\n(report: {time.time() - t0:.0f} s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("train", "report"):
        q = sub.add_parser(name)
        q.add_argument("--recipes", nargs="+", required=True)
        q.add_argument("--out", default="runs/gan-recipes")
    t = sub.choices["train"]
    t.add_argument("--cpu-seconds", type=float, default=900)
    t.add_argument("--snapshot-every", type=float, default=300)
    t.add_argument("--ckpt-every", type=int, default=200)
    t.add_argument("--bank-size", type=int, default=20000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--features", default=None, help="feature network of the projected discriminator")
    t.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU path (one run alone on the device)")
    t.add_argument("--wall-seconds", type=float, default=None,
                   help="also stop after this many seconds of wall time in this call (the GPU budget)")
    r = sub.choices["report"]
    r.add_argument("--evaluator", required=True, help="the independent reader (segmenter.pt of a 'dilated' reader)")
    r.add_argument("--n", type=int, default=300, help="GAN samples per snapshot")
    r.add_argument("--n-ref", type=int, default=500, help="rendered reference scenes")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--json", default=None)
    r.add_argument("--cpu-marks", type=int, nargs="*", default=None, help="only these snapshots (CPU seconds)")
    a = p.parse_args()
    {"train": cmd_train, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
