"""Per-caption cost of making Audio CLEVRGAN speech: caption -> espeak-ng -> 16 kHz -> 40-bin log-mel.

Usage:
    python benchmarks/audio_clevrgan_speech.py [--captions 200] [--threads 1] [--seed 0] [--compact]

Prints a markdown report: milliseconds per caption for each stage (median, mean, p90), caption and audio
lengths by number of objects, and the one-off start-up cost. Scenes are random CLEVR-like object lists
(1-3 objects, as in the prototype data), drawn from ``--seed``; speakers cycle through the fixed panel.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from audio_clevrgan.captions import ATTRIBUTE_VALUES, make_caption  # noqa: E402
from audio_clevrgan.features import log_mel, log_mel_batch  # noqa: E402
from audio_clevrgan.speech import SAMPLE_RATE, SPEAKERS, Synthesizer, resample_to_16k  # noqa: E402
from negmine.experiment import machine_record  # noqa: E402


def random_scene(rng: np.random.Generator, n: int) -> list[dict]:
    return [
        {a: str(rng.choice(ATTRIBUTE_VALUES[a])) for a in ("shape", "color", "material", "size")}
        | {"x": float(rng.uniform()), "y": float(rng.uniform())}
        for _ in range(n)
    ]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def stats(ms: list[float]) -> str:
    a = np.asarray(ms)
    return f"{np.median(a):7.2f} | {a.mean():7.2f} | {np.percentile(a, 90):7.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compact", action="store_true", help="the compact caption style")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    synth = Synthesizer.instance()
    first = synth.synthesize_native("warm up", SPEAKERS[0])
    resample_to_16k(first)
    log_mel(resample_to_16k(first))
    startup_ms = (time.perf_counter() - t0) * 1e3

    timings: dict[str, list[float]] = {"caption": [], "synthesis": [], "resample": [], "features": []}
    by_objects: dict[int, list[tuple[int, float, int]]] = {}
    waves = []
    for k in range(args.captions):
        n_objects = 1 + k % 3
        scene = random_scene(rng, n_objects)
        t = time.perf_counter()
        caption = make_caption(scene, rng, compact=args.compact)
        t_caption = time.perf_counter()
        native = synth.synthesize_native(caption.text, SPEAKERS[k % len(SPEAKERS)])
        t_synth = time.perf_counter()
        audio = resample_to_16k(native)
        t_resample = time.perf_counter()
        feats = log_mel(audio)
        t_feats = time.perf_counter()
        timings["caption"].append((t_caption - t) * 1e3)
        timings["synthesis"].append((t_synth - t_caption) * 1e3)
        timings["resample"].append((t_resample - t_synth) * 1e3)
        timings["features"].append((t_feats - t_resample) * 1e3)
        by_objects.setdefault(n_objects, []).append((len(caption.words), len(audio) / SAMPLE_RATE, feats.shape[1]))
        waves.append(audio)

    batch = 32
    t = time.perf_counter()
    for start in range(0, len(waves), batch):
        log_mel_batch(waves[start : start + batch])
    batched_ms = (time.perf_counter() - t) * 1e3 / len(waves)

    total = [sum(v) for v in zip(*timings.values(), strict=True)]
    audio_seconds = sum(len(w) for w in waves) / SAMPLE_RATE

    style = "compact" if args.compact else "default"
    print(f"## Audio CLEVRGAN speech: cost per caption ({style} caption style)\n")
    print(f"- command: `python benchmarks/audio_clevrgan_speech.py --captions {args.captions} "
          f"--threads {args.threads} --seed {args.seed}{' --compact' if args.compact else ''}`")
    print(f"- commit: {machine_record()['commit']}")
    print(f"- machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, "
          f"torch {torch.__version__} ({args.threads} intra-op thread(s)), "
          f"espeakng-loader {importlib.metadata.version('espeakng-loader')}, Python {platform.python_version()}")
    if hasattr(os, "getloadavg"):
        print(f"- load average at the end (other jobs share the machine): {os.getloadavg()[0]:.2f}")
    print(f"- {args.captions} captions of 1-3 objects, {len(SPEAKERS)} speakers in turn, "
          f"{audio_seconds:.0f} s of audio in all\n")
    print("| stage (ms per caption) | median | mean | p90 |")
    print("|---|---:|---:|---:|")
    for name, ms in timings.items():
        print(f"| {name} | {stats(ms)} |")
    print(f"| **total** | {stats(total)} |")
    print(f"| features, batched by {batch} (mean) | | {batched_ms:7.2f} | |")
    print(f"\nReal-time factor (total time / audio duration): {sum(total) / 1e3 / audio_seconds:.4f}.  ")
    print(f"One-off start-up (copy the library, first utterance, torch resampler and mel set-up): "
          f"{startup_ms:.0f} ms.\n")
    print("| objects | captions | words (mean, max) | audio s (mean, max) | frames (mean, max) |")
    print("|---:|---:|---|---|---|")
    for n in sorted(by_objects):
        words, seconds, frames = (np.asarray(c) for c in zip(*by_objects[n], strict=True))
        print(f"| {n} | {len(words)} | {words.mean():.1f}, {words.max()} | {seconds.mean():.2f}, {seconds.max():.2f} "
              f"| {frames.mean():.0f}, {frames.max()} |")


if __name__ == "__main__":
    main()
