"""What a perfect edit looks like to the readers: the ceilings of the edit-quality figures.

``negmine edits export`` reports how often a GAN edit changes exactly one attribute of one object, as read by the
attribute segmenter. This script measures the same figure (the same :func:`negmine_gan.export.describe_change`)
for edits that are right by construction, so that the export's figure can be read against what is reachable:

- ``renderer``: the renderer draws the scene and the same scene with one attribute of one object changed (the
  ``render-edit`` oracle). Its figure is the readers' own ceiling.
- ``gan-scene-edit``: the GAN draws both (its scene code edited; the ``gan-scene-edit`` oracle). Below the
  renderer's figure by what the GAN draws wrong.
- ``group ablation`` (factored generators only, ``g_factored > 0``): GAN Dissection's edit with the right units in
  the right place: the ``layer4`` units of one value that one object has (cube, cylinder, a colour but gray, metal)
  are zeroed in that object's cells, which turns the value into the default (sphere, gray, rubber). The upper bound
  of ``gan-targeted`` on that generator: it ablates units it has to find, in a region it has to find.

Usage::

    PYTHONPATH=examples OMP_NUM_THREADS=1 python benchmarks/edit_ceilings.py --gan examples/audio_clevrgan/checkpoints/generator.pt --n 256
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "plugins"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from audio_clevrgan.dataset import describe_images  # noqa: E402
from audio_clevrgan.gan import standard_z  # noqa: E402
from audio_clevrgan.render import edit_scene, random_edit, render_scenes  # noqa: E402
from audio_clevrgan.scene_gan import FACTOR_DEFAULTS, encode_scenes, factor_groups  # noqa: E402
from audio_clevrgan.train_scripts import load_gan, load_segmenter  # noqa: E402
from negmine.experiment import machine_record  # noqa: E402
from negmine_gan.export import describe_change  # noqa: E402

CHECKPOINTS = ROOT / "examples/audio_clevrgan/checkpoints"


def _to01(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(-1, 1) + 1) / 2


def read(readers: dict, before: torch.Tensor, after: torch.Tensor, intended: list[tuple] | None = None) -> dict:
    """Per reader: % of pairs read as changed, as exactly one attribute of one object changed, and (when the
    intended (attribute, new value) is known) as exactly that change."""
    out = {}
    for name, reader in readers.items():
        objs_b, _ = describe_images(reader, before)
        objs_a, _ = describe_images(reader, after)
        changes = [describe_change(b, a) for b, a in zip(objs_b, objs_a, strict=True)]
        hit = 0
        if intended is not None:
            for c, (attr, new) in zip(changes, intended, strict=True):
                hit += int(c["single_attribute"] and c["changes"][0]["attribute"] == attr
                           and c["changes"][0]["new"] == new)
        n = len(changes)
        out[name] = {"changed": 100 * sum(c["changed"] for c in changes) / n,
                     "single": 100 * sum(c["single_attribute"] for c in changes) / n,
                     "intended": 100 * hit / n if intended is not None else None}
    return out


@torch.no_grad()
def group_ablation(gan, z: torch.Tensor, scenes, rng: np.random.Generator):
    """For each scene with an object of a non-default value: zero that value's ``layer4`` group in the object's
    cells (where the group's units of the scene and of the scene with that value set to the default differ by at
    least 5% of their largest difference). Returns (kept indices, original and edited images in [-1, 1], intended changes, pixel figures: mean
    |change| on a 0-1 scale inside and outside the region, and the region's share of the 8x8 map)."""
    groups = factor_groups()
    u, shared = gan.layer1.units, gan.layer1.shared
    keep, chosen = [], []
    for i, scene in enumerate(scenes):
        options = [(k, g) for k, o in enumerate(scene) for g, (a, v) in enumerate(groups) if getattr(o, a) == v]
        if options:
            keep.append(i)
            chosen.append(options[int(rng.integers(len(options)))])
    zk = z[keep]
    h = gan.features(zk, "layer4")  # (B, C, 8, 8)
    default_scenes = [edit_scene(scenes[i], k, groups[g][0], FACTOR_DEFAULTS[groups[g][0]])
                      for i, (k, g) in zip(keep, chosen, strict=True)]
    max_objects = gan.scene_config.max_objects
    h_default = gan._run(encode_scenes(default_scenes, max_objects), gan.layer_names[:gan.layer_names.index("layer4") + 1])
    edited = h.clone()
    regions = torch.zeros(len(keep), h.shape[-2], h.shape[-1], dtype=torch.bool)
    for b, (_, g) in enumerate(chosen):
        ch = slice(shared + g * u, shared + (g + 1) * u)
        # the painter's softmax compositing leaves every object a tiny weight in every cell, so "differs at all"
        # is the whole map; the object's cells are where its value's units carry a real share of their peak
        change = (h[b, ch] - h_default[b, ch]).abs().amax(0)
        regions[b] = change > 0.05 * change.max()
        edited[b, ch] = torch.where(regions[b], torch.zeros_like(h[b, ch]), h[b, ch])
    images = gan.decode(edited, after="layer4").clamp(-1, 1)
    original = gan.generate(zk)
    scale = images.shape[-1] // regions.shape[-1]
    mask = regions.repeat_interleave(scale, 1).repeat_interleave(scale, 2)  # (B, R, R)
    diff = (_to01(images) - _to01(original)).abs().mean(1)
    pixels = {"inside": float(diff[mask].mean()) if mask.any() else 0.0,
              "outside": float(diff[~mask].mean()) if (~mask).any() else 0.0,
              "region": float(regions.float().mean())}
    intended = [(groups[g][0], FACTOR_DEFAULTS[groups[g][0]]) for _, g in chosen]
    return keep, original, images, intended, pixels


def ratio_quantiles(original: torch.Tensor, edited: torch.Tensor) -> dict[str, list[float]]:
    """The change ratio that the edit generators' acceptance test computes (``negmine_gan.edit.change_ratio``:
    ImageNet-normalised, inside a mask), for edits right by construction: over the pixels they change (mean
    |change| > 0.02 on a 0-1 scale) and over the whole image; 10th, 50th and 90th percentiles. What a one-attribute
    edit of this generator scores, to read the generators' ``accept`` threshold against (paper: 0.95)."""
    from negmine_gan.edit import change_ratio, imagenet_transform

    a, b = _to01(original), _to01(edited)
    changed = (b - a).abs().mean(1) > 0.02
    q = torch.tensor([0.1, 0.5, 0.9])
    return {name: [round(float(v), 3) for v in torch.quantile(change_ratio(a, b, mask, imagenet_transform), q)]
            for name, mask in (("changed pixels", changed), ("whole image", torch.ones_like(changed)))}


def _pixels(p: dict | None) -> str:
    return "" if p is None else f"{p['inside']:.4f} / {p['outside']:.4f} ({100 * p['region']:.1f}% of cells)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gan", type=Path, default=CHECKPOINTS / "generator.pt")
    p.add_argument("--segmenter", type=Path, default=CHECKPOINTS / "segmenter.pt")
    p.add_argument("--evaluator", type=Path, default=CHECKPOINTS / "evaluator.pt")
    p.add_argument("--n", type=int, default=256, help="latents (standard_z(n, seed))")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    t0 = time.perf_counter()
    gan = load_gan(a.gan)
    if not callable(getattr(gan, "scenes", None)):
        sys.exit(f"{a.gan} is not a scene-coded generator (it has no .scenes(z))")
    readers = {"r1": load_segmenter(a.segmenter), "r2": load_segmenter(a.evaluator)}
    z = standard_z(a.n, a.seed, gan.z_dim)
    scenes = gan.scenes(z)
    rng = np.random.default_rng(a.seed)
    edits = [random_edit(s, rng, gan.scene_config, balance="attribute") for s in scenes]
    intended = [(e.attribute, e.new) for _, e in edits]
    edited_scenes = [s for s, _ in edits]
    size = gan.config.resolution
    rows = []
    with torch.no_grad():
        before = render_scenes(scenes, resolution=size).images
        after = render_scenes(edited_scenes, resolution=size).images
        rows.append(("renderer (`render-edit`)", a.n, read(readers, before, after, intended), None))
        original = _to01(gan.generate(z))
        drawn = _to01(gan(codes=encode_scenes(edited_scenes, gan.scene_config.max_objects)))
        rows.append(("GAN draws the edited scene (`gan-scene-edit`)", a.n, read(readers, original, drawn, intended),
                     None))
        if getattr(gan.config, "g_factored", 0):
            keep, orig, images, want, pixels = group_ablation(gan, z, scenes, np.random.default_rng(a.seed))
            rows.append(("`layer4` value-group ablation in the object's cells", len(keep),
                         read(readers, _to01(orig), _to01(images), want), pixels))
            ratios = ratio_quantiles(orig, images)
    print(f"Commit {machine_record()['commit']}, {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"GAN `{a.gan}` (step {gan.meta.get('step', '?')}); latents standard_z({a.n}, seed={a.seed}); edits "
          f"balanced over attributes; r1 = segmenter, r2 = evaluator\n")
    print("| edit | edits | changed r1 | single attribute r1 | as intended r1 | changed r2 | single attribute r2 "
          "| as intended r2 | change inside / outside (region share) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, n, r, pixels in rows:
        cells = [f"{r[k]['changed']:.1f}% | {r[k]['single']:.1f}% | {r[k]['intended']:.1f}%" for k in ("r1", "r2")]
        print(f"| {name} | {n} | {cells[0]} | {cells[1]} | {_pixels(pixels)} |")
    if getattr(gan.config, "g_factored", 0):
        print("\nChange ratio of the value-group ablations (the edit generators' acceptance test; 10th / 50th / 90th "
              "percentiles): " + "; ".join(f"over the {k} {' / '.join(map(str, v))}" for k, v in ratios.items()))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
