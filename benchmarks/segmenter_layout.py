"""How fast the attribute segmenter reads images on the CPU in PyTorch's default (NCHW) and channels-last (NHWC)
memory layouts, and whether the two read the same objects.

    python benchmarks/segmenter_layout.py [--data data/audio-clevrgan] [--n 256] [--batch 32] [--threads 1]

The edit generators' ``drop_still_true`` / ``keep_changes`` read every edit with the segmenter during training (the
task's ``describe_images`` resource): about a quarter of a GAN-edit step on one thread. Times the segmenter on
``--batch`` images at a time (the edits of one step), median of five passes, in both layouts; then reads ``--n``
images of the dataset in both and compares the probabilities (largest difference) and the objects
(:func:`audio_clevrgan.dataset.describe_images`: attributes, position and pixels equal; confidence within 1e-3).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from audio_clevrgan.dataset import describe_images  # noqa: E402
from audio_clevrgan.train_scripts import load_segmenter  # noqa: E402


def load_images(data: Path, n: int) -> torch.Tensor:
    from PIL import Image

    paths = sorted((data / "images").glob("*.png"))[:n]
    return torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])).permute(0, 3, 1, 2)


def time_reads(segmenter: torch.nn.Module, images: torch.Tensor, passes: int = 5) -> float:
    with torch.no_grad():
        segmenter.predict(images)
        times = []
        for _ in range(passes):
            start = time.perf_counter()
            segmenter.predict(images)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def same_objects(a: list[list[dict]], b: list[list[dict]]) -> tuple[int, float]:
    """(images whose objects differ in anything but confidence, largest confidence difference)."""
    differ, largest = 0, 0.0
    for x, y in zip(a, b, strict=True):
        strip = [[{k: v for k, v in o.items() if k != "confidence"} for o in objs] for objs in (x, y)]
        differ += strip[0] != strip[1]
        if strip[0] == strip[1]:
            largest = max([largest] + [abs(o["confidence"] - p["confidence"]) for o, p in zip(x, y, strict=True)])
    return differ, largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "audio-clevrgan")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = ROOT / "examples" / "audio_clevrgan" / "checkpoints" / "segmenter.pt"
    default = load_segmenter(path, "cpu")
    channels_last = load_segmenter(path, "cpu").to(memory_format=torch.channels_last)
    # NCHW-contiguous, as the edits and the task's batches are (the PNGs' NHWC array, permuted, would be NHWC already)
    images = (load_images(args.data, args.n).float() / 255).contiguous()
    t_default = time_reads(default, images[: args.batch])
    nhwc = images.contiguous(memory_format=torch.channels_last)  # the describer hands the images over in this layout
    t_last = time_reads(channels_last, nhwc[: args.batch])
    with torch.no_grad():
        p_default, p_last = default.predict(images), channels_last.predict(nhwc)
        largest = max(float((p_default[k] - p_last[k]).abs().max()) for k in p_default)
        differ, confidence = same_objects(describe_images(default, images)[0], describe_images(channels_last, nhwc)[0])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s)\n")
    print(f"| layout | s per {args.batch} images | ms per image | speed-up |\n|---|---|---|---|")
    print(f"| default (NCHW) | {t_default:.3f} | {1000 * t_default / args.batch:.1f} | 1.00x |")
    print(f"| channels-last (NHWC) | {t_last:.3f} | {1000 * t_last / args.batch:.1f} | {t_default / t_last:.2f}x |")
    print(f"\nOver {len(images)} dataset images: largest probability difference {largest:.1e}; images whose objects "
          f"differ (attributes, position, pixels) {differ}; largest confidence difference {confidence:.1e}")


if __name__ == "__main__":
    main()
