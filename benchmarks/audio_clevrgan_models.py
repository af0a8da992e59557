"""Audio CLEVRGAN models benchmark: renderer throughput, segmenter accuracy, GAN quality.

Usage::

    PYTHONPATH=examples python benchmarks/audio_clevrgan_models.py [--out benchmarks/results/audio_clevrgan_models.md]

Uses the committed checkpoints in ``examples/audio_clevrgan/checkpoints/`` (or ``--gan``/``--segmenter``).
Prints Markdown (and writes it with ``--out``), including the command, machine and commit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import audio_clevrgan  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "examples"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from audio_clevrgan.quality import format_quality, gan_quality  # noqa: E402
from audio_clevrgan.render import render_scenes, sample_scenes  # noqa: E402
from audio_clevrgan.segmenter import evaluate_segmenter  # noqa: E402
from audio_clevrgan.train_scripts import load_gan, load_segmenter  # noqa: E402
from negmine.experiment import machine_record  # noqa: E402

CK = ROOT / "examples" / "audio_clevrgan" / "checkpoints"


def _best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def renderer_throughput(n: int = 1024) -> list[tuple[str, float]]:
    """Scenes per second: sampling alone, rendering alone and both, at 64x64 (and 128x128)."""
    rows = []
    t = _best_of(lambda: sample_scenes(np.random.default_rng(0), n), 2)
    rows.append(("sample scenes (CLEVR rules, 1-3 objects)", n / t))
    scenes = sample_scenes(np.random.default_rng(0), n)
    render_scenes(scenes[:128])
    for res, ss in ((64, 2), (64, 1), (128, 2)):
        m = n if res == 64 else n // 4
        t = _best_of(lambda res=res, ss=ss, m=m: render_scenes(scenes[:m], resolution=res, supersample=ss))
        rows.append((f"render {res}x{res}, {ss}x{ss} supersampling, batch 128", m / t))
    t = _best_of(lambda: render_scenes(sample_scenes(np.random.default_rng(1), n)))
    rows.append(("sample + render 64x64 (defaults: 2x2 supersampling, chunks of 128)", n / t))
    return rows


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gan", default=str(CK / "generator.pt"))
    p.add_argument("--segmenter", default=str(CK / "segmenter.pt"))
    p.add_argument("--n-gan", type=int, default=1000, help="GAN samples for the quality figures")
    p.add_argument("--n-eval", type=int, default=500, help="held-out rendered scenes for the segmenter")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    lines = [
        "# Audio CLEVRGAN models benchmark",
        "",
        f"- command: `PYTHONPATH=examples python benchmarks/audio_clevrgan_models.py {' '.join(argv or sys.argv[1:])}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()} (CPU only)",
        f"- commit: {machine_record()['commit']}",
        "",
        "## Renderer throughput (CPU, best of 3)",
        "",
        "On a shared two-core machine, two torch threads can be slower than one (threads wait for each other when",
        "another process holds a core), so both are reported.",
        "",
        "| what | scenes/s, 1 thread | scenes/s, 2 threads |",
        "|---|---|---|",
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one = renderer_throughput()
    torch.set_num_threads(2)
    two = renderer_throughput()
    torch.set_num_threads(threads)
    for (name, r1), (_, r2) in zip(one, two, strict=True):
        lines.append(f"| {name} | {r1:.0f} | {r2:.0f} |")
    seg = load_segmenter(a.segmenter)
    t = time.perf_counter()
    ev = evaluate_segmenter(seg, seed=10_000, n=a.n_eval)
    lines += [
        "",
        f"## Segmenter accuracy ({a.n_eval} held-out rendered scenes, seed 10000; {time.perf_counter() - t:.0f}s)",
        "",
        f"- checkpoint: `{Path(a.segmenter).name}`, meta {json.dumps(getattr(seg, 'meta', {}))}",
        "- per-pixel accuracy on object pixels: "
        + ", ".join(f"{k} {100 * v:.2f}%" for k, v in ev["pixel_acc"].items())
        + f"; mean **{100 * ev['pixel_acc_mean']:.2f}%**",
        f"- foreground: accuracy {100 * ev['foreground_acc']:.2f}%, IoU {100 * ev['foreground_iou']:.2f}%",
        f"- objects with all four attributes right: {100 * ev['object_acc']:.2f}% of {ev['n_objects']} "
        f"({ev['n_detected']} detected)",
    ]
    G = load_gan(a.gan)
    t = time.perf_counter()
    q = gan_quality(G, seg, n=a.n_gan)
    lines += [
        "",
        f"## GAN quality ({time.perf_counter() - t:.0f}s)",
        "",
        f"- checkpoint: `{Path(a.gan).name}`, meta {json.dumps(getattr(G, 'meta', {}))}",
        format_quality(q),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    return text


if __name__ == "__main__":
    main()
