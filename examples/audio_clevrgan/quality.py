"""GAN quality measured with the attribute segmenter, and a sheet of images a person can judge.

:func:`gan_quality` generates ``n`` images (latents ``standard_z(n, seed)``), segments them, and reports

* ``confident_fraction``: the fraction of generated objects whose four attributes each have mean probability
  >= ``threshold`` (0.9) - the objects a caption can name without guessing;
* ``freq_diff_pp``: per attribute value, its frequency among GAN objects minus its frequency among rendered
  objects (ground truth of ``n_ref`` scenes of the training distribution), in percentage points; and the same
  difference against the segmenter's reading of rendered images (``freq_diff_pp_vs_segmented``), which cancels
  the segmenter's own biases;
* the distribution of the number of objects per image, for GAN and rendered images;
* the segmenter's own ``confident_fraction`` on rendered images (its ceiling).

:func:`make_sheet` writes a PNG with rendered scenes, the renderer's labels and the segmenter's reading of them,
then GAN samples and the segmenter's reading of those, with each detected object listed under its image.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import torch

from .gan import Generator, standard_z
from .render import SCENE_PROFILES, SceneConfig, render_scenes, sample_scenes, to_uint8
from .segmenter import AttributeSegmenter, DetectedObject, nearest_object, segment_objects
from .vocab import ATTRIBUTES, COLOR_RGB, COLORS, VALUES


def _frequencies(objs: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    out = {}
    for a in ATTRIBUTES:
        c = Counter(o[a] for o in objs)
        out[a] = {v: c[v] / max(len(objs), 1) for v in VALUES[a]}
    return out


def _diff_pp(f: dict, g: dict) -> dict[str, dict[str, float]]:
    return {a: {v: round(100 * (f[a][v] - g[a][v]), 2) for v in VALUES[a]} for a in ATTRIBUTES}


def _max_abs(d: dict) -> float:
    return max(abs(x) for vals in d.values() for x in vals.values())


@torch.no_grad()
def generate_images(G: Generator, n: int, seed: int = 1, batch_size: int = 100) -> torch.Tensor:
    """``n`` GAN images in [0, 1], ``(n, 3, R, R)`` on the CPU, from ``standard_z(n, seed)``."""
    z = standard_z(n, seed, G.z_dim)
    return torch.cat([(G.generate(z[i : i + batch_size]).cpu() + 1) / 2 for i in range(0, n, batch_size)])


def gan_quality(
    G: Generator,
    segmenter: AttributeSegmenter,
    n: int = 1000,
    seed: int = 1,
    threshold: float = 0.9,
    n_ref: int = 2000,
    ref_seed: int = 20_000,
    scene_config: SceneConfig = SCENE_PROFILES["cpu"],
    device: str | torch.device = "cpu",
) -> dict:
    """Quality figures of ``G`` read by ``segmenter`` (see the module docstring). All numbers are plain floats."""
    G = G.to(device)
    segmenter = segmenter.to(device)
    images = generate_images(G, n, seed)
    gan_objs = segment_objects(segmenter.predict(images))
    flat = [o for img in gan_objs for o in img]
    confident = [o for o in flat if o.min_confidence >= threshold]

    scenes = sample_scenes(np.random.default_rng(ref_seed), n_ref, scene_config)
    ref = render_scenes(scenes, resolution=G.config.resolution, device=device)
    ref_true = [{a: getattr(o, a) for a in ATTRIBUTES} for s in scenes for o in s]
    ref_seg = segment_objects(segmenter.predict(ref.images))
    ref_seg_flat = [o for img in ref_seg for o in img]

    f_gan = _frequencies([o.attributes for o in flat])
    f_true = _frequencies(ref_true)
    f_seg = _frequencies([o.attributes for o in ref_seg_flat])
    d_true, d_seg = _diff_pp(f_gan, f_true), _diff_pp(f_gan, f_seg)
    per_attr_conf = {
        a: float(np.mean([o.confidence[a] >= threshold for o in flat])) if flat else 0.0 for a in ATTRIBUTES
    }
    return {
        "n_images": n,
        "z_seed": seed,
        "threshold": threshold,
        "n_objects": len(flat),
        "objects_per_image": len(flat) / n,
        "confident_fraction": len(confident) / max(len(flat), 1),
        "confident_fraction_per_attribute": per_attr_conf,
        "freq_gan": f_gan,
        "freq_rendered": f_true,
        "freq_diff_pp": d_true,
        "max_abs_freq_diff_pp": _max_abs(d_true),
        "freq_diff_pp_vs_segmented": d_seg,
        "max_abs_freq_diff_pp_vs_segmented": _max_abs(d_seg),
        "count_hist_gan": dict(sorted(Counter(len(x) for x in gan_objs).items())),
        "count_hist_rendered": dict(sorted(Counter(len(s) for s in scenes).items())),
        "rendered_segmented_confident_fraction": float(
            np.mean([o.min_confidence >= threshold for o in ref_seg_flat]) if ref_seg_flat else 0.0
        ),
        "rendered_segmented_objects_per_image": len(ref_seg_flat) / n_ref,
        "count_hist_rendered_segmented": dict(sorted(Counter(len(x) for x in ref_seg).items())),
        **(_intended(G, gan_objs, n, seed, device) if hasattr(G, "scenes") else {}),
    }


def _rendered_objects(scenes, instances: torch.Tensor):
    """``(image index, centroid column, centroid row, true attributes)`` of every object the renderer drew
    (``instances`` ``(B, H, W)``: its instance maps; objects hidden entirely are skipped)."""
    for b, s in enumerate(scenes):
        for k, o in enumerate(s):
            rr, cc = torch.nonzero(instances[b] == k + 1, as_tuple=True)
            if len(rr):
                yield b, float(cc.float().mean()), float(rr.float().mean()), {a: getattr(o, a) for a in ATTRIBUTES}


def _intended(G, gan_objs: list, n: int, seed: int, device) -> dict:
    """For a generator that knows each latent's scene (``G.scenes``, the scene-coded one): how many intended
    objects the reader finds where the renderer would draw them (centroid within 4 px) with all four attributes as
    intended, and in how many images it finds exactly the intended number of objects."""
    scenes = G.scenes(standard_z(n, seed, G.z_dim))
    ren = render_scenes(scenes, resolution=G.config.resolution, device=device)
    right = total = 0
    for b, cx, cy, truth in _rendered_objects(scenes, ren.instances):
        total += 1
        hit = nearest_object(gan_objs[b], cx, cy)
        right += hit is not None and hit.attributes == truth
    return {
        "intended_object_acc": right / max(total, 1),
        "intended_n_objects": total,
        "count_exact": float(np.mean([len(g) == len(s) for g, s in zip(gan_objs, scenes, strict=True)])),
        "count_hist_intended": dict(sorted(Counter(len(s) for s in scenes).items())),
    }


@torch.no_grad()
def reader_agreement(
    reader1: AttributeSegmenter,
    reader2: AttributeSegmenter,
    n: int = 500,
    seed: int = 30_000,
    threshold: float = 0.9,
    scene_config: SceneConfig = SCENE_PROFILES["cpu"],
) -> dict:
    """Two attribute readers on ``n`` held-out rendered scenes of the GAN's training distribution.

    For each reader: ``r*_object_acc``, the fraction of the renderer's objects matched (centroid within 4 px) by a
    detected object with all four attributes right, and ``r*_confident``, the fraction of its detected objects
    with every attribute at p >= ``threshold`` (its ceiling for ``gan_quality``'s confident fraction). ``agree``:
    of the renderer's objects that both readers detect, the fraction to which they give the same four attributes.
    """
    scenes = sample_scenes(np.random.default_rng(seed), n, scene_config)
    ren = render_scenes(scenes, resolution=reader1.config.resolution)
    read = [segment_objects(r.predict(ren.images)) for r in (reader1, reader2)]
    right = [0, 0]
    both = same = total = 0
    for b, cx, cy, truth in _rendered_objects(scenes, ren.instances):
        total += 1
        hits = [nearest_object(objs[b], cx, cy) for objs in read]
        for i, h in enumerate(hits):
            right[i] += h is not None and h.attributes == truth
        if hits[0] is not None and hits[1] is not None:
            both += 1
            same += hits[0].attributes == hits[1].attributes
    out = {"n_scenes": n, "n_objects": total, "n_both": both, "agree": same / max(both, 1)}
    for i, objs in enumerate(read):
        flat = [o for img in objs for o in img]
        out[f"r{i + 1}_object_acc"] = right[i] / max(total, 1)
        out[f"r{i + 1}_confident"] = float(np.mean([o.min_confidence >= threshold for o in flat])) if flat else 0.0
    return out


def _count_pct(q: dict) -> str:
    hists = [q["count_hist_gan"], q["count_hist_rendered"], q.get("count_hist_rendered_segmented", {})]
    tot = [max(sum(h.values()), 1) for h in hists]
    keys = sorted({int(k) for h in hists for k in h})

    def pct(h: dict, t: int, k: int) -> float:
        return 100 * (h.get(k, h.get(str(k), 0))) / t

    return ", ".join(f"{k}: " + " / ".join(f"{pct(h, t, k):.1f}" for h, t in zip(hists, tot, strict=True)) for k in keys)


def format_quality(q: dict) -> str:
    """Markdown summary of :func:`gan_quality`'s output."""
    lines = [
        f"- GAN samples: {q['n_images']} (z = standard_z(n, seed={q['z_seed']})), objects found: {q['n_objects']} "
        f"({q['objects_per_image']:.2f} per image; rendered scenes: {q['rendered_segmented_objects_per_image']:.2f} "
        "found by the same reader)",
        f"- objects with all four attributes at p >= {q['threshold']}: **{100 * q['confident_fraction']:.1f}%** "
        f"(per attribute: "
        + ", ".join(f"{a} {100 * v:.1f}%" for a, v in q["confident_fraction_per_attribute"].items())
        + f"; the same reader on rendered scenes: {100 * q['rendered_segmented_confident_fraction']:.1f}%)",
        f"- largest |frequency difference| GAN vs rendered ground truth: **{q['max_abs_freq_diff_pp']:.2f} pp**; "
        f"vs the same reader's reading of rendered scenes: **{q['max_abs_freq_diff_pp_vs_segmented']:.2f} pp**",
        f"- objects per image, GAN: {q['count_hist_gan']}; rendered: {q['count_hist_rendered']}",
        "- objects per image in % of images (GAN read by this reader / rendered ground truth / rendered read by this "
        "reader): " + _count_pct(q),
        *(
            [f"- the latents' intended scenes (scene-coded generator): **{100 * q['intended_object_acc']:.1f}%** of "
             f"the {q['intended_n_objects']} intended objects found where the renderer draws them with all four "
             f"attributes as intended; exactly the intended number of objects in {100 * q['count_exact']:.1f}% "
             f"of images; intended counts {q['count_hist_intended']}"]
            if "intended_object_acc" in q else []
        ),
        "",
        "| attribute | value | GAN % | rendered % | diff pp | diff pp vs segmented renders |",
        "|---|---|---|---|---|---|",
    ]
    for a in ATTRIBUTES:
        for v in VALUES[a]:
            lines.append(
                f"| {a} | {v} | {100 * q['freq_gan'][a][v]:.1f} | {100 * q['freq_rendered'][a][v]:.1f} | "
                f"{q['freq_diff_pp'][a][v]:+.2f} | {q['freq_diff_pp_vs_segmented'][a][v]:+.2f} |"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# A sheet to look at
# --------------------------------------------------------------------------------------------------------------

_PALETTE = np.array([COLOR_RGB[c] for c in COLORS], dtype=np.float64) / 255.0
_SHAPE_CODE = {"cube": "cube", "sphere": "sphere", "cylinder": "cyl"}


def label_image(attrs: torch.Tensor) -> np.ndarray:
    """Colour-code attribute maps ``(B, 4, H, W)`` (class indices, 0 = ground) as RGB ``(B, H, W, 3)`` uint8.

    Object pixels take their colour class's RGB; metal is drawn lighter, small objects get a dark dot pattern,
    and shapes are told apart by a hatch (cube: none, sphere: horizontal lines, cylinder: vertical lines).
    """
    a = attrs.cpu().numpy()
    B, _, H, W = a.shape
    out = np.full((B, H, W, 3), 0.15)
    fg = a[:, 0] > 0
    col = _PALETTE[np.clip(a[:, 1] - 1, 0, 7)]
    col = np.where((a[:, 2] == 2)[..., None], 0.55 * col + 0.45, col)  # metal: lighter
    rr, cc = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    hatch = ((a[:, 0] == 2) & (rr % 3 == 0)) | ((a[:, 0] == 3) & (cc % 3 == 0))
    dots = (a[:, 3] == 2) & (rr % 4 == 1) & (cc % 4 == 1)
    col = np.where((hatch | dots)[..., None], col * 0.45, col)
    out[fg] = col[fg]
    return (out * 255 + 0.5).astype(np.uint8)


def pred_to_attrs(pred: dict[str, torch.Tensor], fg_threshold: float = 0.5) -> torch.Tensor:
    """Hard attribute maps ``(B, 4, H, W)`` from segmenter probabilities (0 where not foreground)."""
    fg = pred["foreground"][:, 1] > fg_threshold
    return torch.stack([torch.where(fg, pred[a].argmax(1) + 1, 0) for a in ATTRIBUTES], 1)


def _describe(o: DetectedObject) -> str:
    return f"{o.size[0].upper()} {o.color} {o.material[:3]} {_SHAPE_CODE[o.shape]} {o.min_confidence:.2f}"


def make_sheet(
    G: Generator,
    segmenter: AttributeSegmenter,
    path: str | os.PathLike,
    n: int = 8,
    seed: int = 3,
    scale: int = 3,
    device: str | torch.device = "cpu",
    evaluator: AttributeSegmenter | None = None,
) -> None:
    """Write a PNG: rows of rendered scenes / renderer labels / segmenter labels, then GAN samples / segmenter
    labels, each tile ``scale`` times enlarged, with the objects the segmenter found written under GAN tiles
    (``L red met sphere 0.97`` = large red metal sphere, lowest attribute confidence 0.97). With ``evaluator`` (the
    independent second reader), each labelled row is followed by the evaluator's reading of the same tiles."""
    from PIL import Image, ImageDraw

    res = G.config.resolution
    scenes = sample_scenes(np.random.default_rng(seed), n)
    ren = render_scenes(scenes, resolution=res, device=device)
    gan = generate_images(G.to(device), 2 * n, seed)
    readers = [("segmenter", segmenter)] + ([("evaluator", evaluator)] if evaluator is not None else [])

    def read(images: torch.Tensor, what: str) -> list[tuple[str, np.ndarray, list]]:
        out = []
        for label, reader in readers:
            pred = reader.to(device).predict(images)
            out.append((f"{label} on {what}", label_image(pred_to_attrs(pred)), segment_objects(pred)))
        return out

    rows = [
        ("rendered scenes", to_uint8(ren.images), None),
        (
            "renderer labels (colour; metal lighter; sphere -, cylinder |, small dotted)",
            label_image(ren.attributes),
            None,
        ),
        *read(ren.images, "rendered scenes"),
        ("GAN samples", to_uint8(gan[:n]), None),
        *read(gan[:n], "GAN samples"),
        ("GAN samples", to_uint8(gan[n:]), None),
        *read(gan[n:], "GAN samples"),
    ]
    tile = res * scale
    pad, title_h, line_h = 4, 14, 11
    heights = [title_h + tile + (5 * line_h if objs is not None else 0) + pad for _, _, objs in rows]
    W = n * (tile + pad) + pad
    sheet = Image.new("RGB", (W, sum(heights) + pad), (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    y = pad
    for (title, imgs, objs), h in zip(rows, heights, strict=True):
        draw.text((pad, y), title, fill=(0, 0, 0))
        for i in range(n):
            x = pad + i * (tile + pad)
            sheet.paste(Image.fromarray(imgs[i]).resize((tile, tile), Image.NEAREST), (x, y + title_h))
            if objs is not None:
                for j, o in enumerate(objs[i][:5]):
                    draw.text((x, y + title_h + tile + 1 + j * line_h), _describe(o), fill=(0, 0, 0))
        y += h
    sheet.save(path)


__all__ = [
    "format_quality",
    "gan_quality",
    "generate_images",
    "label_image",
    "make_sheet",
    "pred_to_attrs",
    "reader_agreement",
]
