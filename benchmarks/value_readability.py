"""How readably the committed GAN draws each attribute value: intended value against the evaluator's reading.

For ``--n`` latents of the scene-coded generator, each object the renderer would draw (its scene is known from the
latent) is matched to the evaluator's nearest detected object (centroid within 4 px, ``nearest_object``) in the GAN
image, and in the rendered image as the reader's own ceiling; per value, the share read right, and what the rest
were read as ("missed": no object found there)::

    PYTHONPATH=examples OMP_NUM_THREADS=2 python benchmarks/value_readability.py --n 1000
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import torch  # noqa: E402

from audio_clevrgan.gan import standard_z  # noqa: E402
from audio_clevrgan.quality import _rendered_objects  # noqa: E402
from audio_clevrgan.render import render_scenes  # noqa: E402
from audio_clevrgan.segmenter import nearest_object, segment_objects  # noqa: E402
from audio_clevrgan.train_scripts import load_gan, load_segmenter  # noqa: E402
from audio_clevrgan.vocab import ATTRIBUTES  # noqa: E402

CHECKPOINTS = ROOT / "examples" / "audio_clevrgan" / "checkpoints"


def readings(images: torch.Tensor, scenes, instances: torch.Tensor, reader) -> tuple[Counter, Counter]:
    """(objects per (attribute, value), readings per (attribute, value, value read or "missed"))."""
    found = segment_objects(reader.predict(images))
    total, read = Counter(), Counter()
    for b, cx, cy, truth in _rendered_objects(scenes, instances):
        hit = nearest_object(found[b], cx, cy)
        for a in ATTRIBUTES:
            total[(a, truth[a])] += 1
            read[(a, truth[a], hit.attributes[a] if hit is not None else "missed")] += 1
    return total, read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    gan = load_gan(CHECKPOINTS / "generator.pt")
    reader = load_segmenter(CHECKPOINTS / "evaluator.pt")
    z = standard_z(a.n, a.seed, gan.z_dim)
    scenes = gan.scenes(z)
    rendered = render_scenes(scenes, resolution=gan.config.resolution)
    drawn = torch.cat([(gan.generate(z[i : i + 100]) + 1) / 2 for i in range(0, a.n, 100)])
    results = {label: readings(images, scenes, rendered.instances, reader)
               for label, images in (("GAN", drawn), ("rendered", rendered.images))}
    print("| attribute | value | objects | GAN: read right | GAN: read as | rendered: read right |")
    print("|---|---|---|---|---|---|")
    total = results["GAN"][0]
    for attribute, value in sorted(total):
        n = total[(attribute, value)]
        right = {k: results[k][1][(attribute, value, value)] / n for k in results}
        wrong = ", ".join(f"{k[2]} {100 * c / n:.1f}%" for k, c in sorted(results["GAN"][1].items())
                          if k[:2] == (attribute, value) and k[2] != value)
        print(f"| {attribute} | {value} | {n} | {100 * right['GAN']:.1f}% | {wrong} | {100 * right['rendered']:.1f}% |")


if __name__ == "__main__":
    main()
