"""Where the time of an Audio CLEVRGAN build goes, per chunk of 256 pairs, phase by phase (run sequentially).

    python benchmarks/audio_clevrgan_build.py [--chunks 2] [--workers 2]

Prints a table of seconds per phase (GAN sampling, segmenter, object extraction, captions, speech with the worker
pool, file writing) and the implied time for 10,000 pairs when the phases run one after another. The full build
pipelines speech with the next chunk's images, so its wall time lies between max(phases) and their sum; measure it
with `time negmine data build audio-clevrgan --out DIR --n 10000 --seed 0`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from audio_clevrgan import dataset as ds  # noqa: E402
from audio_clevrgan.captions import make_caption  # noqa: E402
from audio_clevrgan.segmenter import segment_objects  # noqa: E402
from audio_clevrgan.speech import write_wav  # noqa: E402
from audio_clevrgan.vocab import ATTRIBUTES  # noqa: E402

CHECKPOINTS = Path(__file__).resolve().parents[1] / "examples" / "audio_clevrgan" / "checkpoints"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    source = ds.GanSource(CHECKPOINTS / "generator.pt", CHECKPOINTS / "segmenter.pt")
    pool = multiprocessing.get_context("spawn").Pool(args.workers, initializer=ds._worker_init)
    pool.map(ds._speak, [("warm up", 0)] * args.workers)
    phases: dict[str, list[float]] = {k: [] for k in ("gan", "segmenter", "objects", "captions", "speech", "write")}
    out = Path(tempfile.mkdtemp())
    for c in range(args.chunks):
        rng = np.random.default_rng([0, c])
        t0 = time.perf_counter()
        z = torch.from_numpy(rng.standard_normal((ds.CHUNK, source.z_dim)).astype(np.float32))
        images01 = (source.gan.generate(z) + 1) / 2
        t1 = time.perf_counter()
        pred = source.segmenter.predict(images01)
        t2 = time.perf_counter()
        objects = segment_objects(pred)
        t3 = time.perf_counter()
        jobs = []
        for objs in objects:
            dicts = [{**o.attributes, "x": o.centroid[0] / 64, "y": o.centroid[1] / 64} for o in objs]
            text = make_caption([{k: d[k] for k in (*ATTRIBUTES, "x", "y")} for d in dicts], rng).text if dicts else "x"
            jobs.append((text, int(rng.integers(10))))
        t4 = time.perf_counter()
        waves = pool.map(ds._speak, jobs, chunksize=8)
        t5 = time.perf_counter()
        uint8 = (images01 * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for k in range(len(jobs)):
            ds._write_png(out / f"{k}.png", uint8[k])
            write_wav(out / f"{k}.wav", waves[k])
        t6 = time.perf_counter()
        for key, value in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5), strict=True):
            phases[key].append(value)
    pool.close()
    from negmine.experiment import machine_record

    commit = machine_record()['commit']
    print(f"# Audio CLEVRGAN build phases ({ds.CHUNK} pairs per chunk, median of {args.chunks} chunks)\n")
    print(f"- command: `python benchmarks/audio_clevrgan_build.py --chunks {args.chunks} --workers {args.workers}`")
    print(f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} (2 threads), "
          f"load average {os.getloadavg()[0]:.2f}; commit {commit}\n")
    print("| phase | s per chunk | ms per pair |\n|---|---|---|")
    total = 0.0
    for key, values in phases.items():
        med = float(np.median(values))
        total += med
        print(f"| {key} | {med:.2f} | {1000 * med / ds.CHUNK:.1f} |")
    print(f"| **sum** | {total:.2f} | {1000 * total / ds.CHUNK:.1f} |")
    print(f"\nsequential estimate for 10,000 pairs: {total * 10000 / ds.CHUNK / 60:.1f} min")


if __name__ == "__main__":
    main()
