"""Does an Audio CLEVRGAN build give the same bytes on another CPU? Builds the same pairs under several PyTorch CPU
kernel sets and thread counts and compares them file by file.

    python benchmarks/build_portability.py [--n 256] [--kernels default,avx2] [--threads 1,2] [--float64-cost]

Each build runs ``negmine data build audio-clevrgan --n N --seed 0`` in a subprocess with ``ATEN_CPU_CAPABILITY``
(the vector unit PyTorch's kernels use: ``default``, ``avx2``, ``avx512`` where the CPU has it) and
``OMP_NUM_THREADS`` set; the first build is the reference. Prints, per build: the dataset's content digest (what a
run's ``provenance.json`` records), the files that differ from the reference by folder, the image values (uint8)
that differ and by how much, and the manifest rows (captions, objects) that differ.

``--float64-cost`` also times the GAN and the segmenter on one chunk in float32 and float64 (one thread), the price
of drawing in double precision, where rounding to uint8 no longer depends on the kernels' summation order.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from audio_clevrgan.dataset import content_digest  # noqa: E402


def build(out: Path, n: int, kernels: str, threads: int) -> float:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": kernels, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("negmine")), "data", "build", "audio-clevrgan", "--out", str(out), "--n",
                    str(n), "--seed", "0"], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def compare(ref: Path, other: Path) -> dict:
    """Files of ``other`` that differ from ``ref`` per top folder, image values that differ, manifest rows."""
    from PIL import Image

    skip = {"build.json"}
    files = sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file() and p.parts[len(ref.parts)] not in
                   ("cache", ".progress") and p.name not in skip)
    differ: dict[str, int] = {}
    values = pixels_max = 0
    images = 0
    for rel in files:
        a, b = (ref / rel).read_bytes(), (other / rel).read_bytes()
        if a == b:
            continue
        differ[rel.parts[0]] = differ.get(rel.parts[0], 0) + 1
        if rel.suffix == ".png":
            x = np.asarray(Image.open(ref / rel), dtype=np.int16)
            y = np.asarray(Image.open(other / rel), dtype=np.int16)
            d = np.abs(x - y)
            values += int((d > 0).sum())
            pixels_max = max(pixels_max, int(d.max()))
            images += 1
    rows_a = (ref / "manifest.jsonl").read_text().splitlines()
    rows_b = (other / "manifest.jsonl").read_text().splitlines()
    rows = sum(json.loads(x) != json.loads(y) for x, y in zip(rows_a, rows_b, strict=True))
    return {"files": len(files), "differ": differ, "values": values, "max": pixels_max, "images": images,
            "rows": rows}


def float64_cost(n: int = 256) -> dict[str, float]:
    import torch

    from audio_clevrgan.dataset import GanSource

    torch.set_num_threads(1)
    ck = ROOT / "examples" / "audio_clevrgan" / "checkpoints"
    source = GanSource(ck / "generator.pt", ck / "segmenter.pt")
    z = torch.from_numpy(np.random.default_rng(0).standard_normal((n, source.z_dim)).astype(np.float32))
    out = {}
    with torch.no_grad():
        for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
            gan, seg = source.gan.to(dtype), source.segmenter.to(dtype)
            t = time.perf_counter()
            images = (gan.generate(z.to(dtype)) + 1) / 2
            out[f"gan {name}"] = time.perf_counter() - t
            t = time.perf_counter()
            seg(images)
            out[f"segmenter {name}"] = time.perf_counter() - t
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--kernels", default="default,avx2", help="ATEN_CPU_CAPABILITY values, the first the reference")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--float64-cost", action="store_true")
    args = parser.parse_args()
    settings = [(k, int(t)) for k in args.kernels.split(",") for t in args.threads.split(",")]
    work = Path(tempfile.mkdtemp(prefix="build-portability-"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.n} pairs per build\n")
    print("| kernels | threads | wall s | content digest | files differing (of all) | image values differing "
          "(images; largest difference) | manifest rows differing |")
    print("|---|---|---|---|---|---|---|")
    ref = None
    for kernels, threads in settings:
        out = work / f"{kernels}-{threads}"
        wall = build(out, args.n, kernels, threads)
        digest = content_digest(out)
        if ref is None:
            ref = out
            print(f"| {kernels} | {threads} | {wall:.0f} | {digest} | reference | reference | reference |")
            continue
        c = compare(ref, out)
        folders = ", ".join(f"{k} {v}" for k, v in sorted(c["differ"].items())) or "none"
        print(f"| {kernels} | {threads} | {wall:.0f} | {digest} | {folders} (of {c['files']}) | {c['values']} "
              f"({c['images']}; {c['max']}) | {c['rows']} |")
    if args.float64_cost:
        cost = float64_cost()
        print("\n| one chunk of 256 images, one thread | float32 s | float64 s | ratio |\n|---|---|---|---|")
        for part in ("gan", "segmenter"):
            a, b = cost[f"{part} float32"], cost[f"{part} float64"]
            print(f"| {part} | {a:.1f} | {b:.1f} | {b / a:.1f}x |")


if __name__ == "__main__":
    main()
