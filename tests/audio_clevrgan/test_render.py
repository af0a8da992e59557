"""Scene renderer: CLEVR vocabulary, placement rules, masks, relations, edits, determinism."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

try:
    import audio_clevrgan  # noqa: F401
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from audio_clevrgan import render as R
from audio_clevrgan.vocab import ATTRIBUTES, COLOR_RGB, COLORS, VALUES, value_index


@pytest.fixture(scope="module")
def batch():
    scenes = R.sample_scenes(np.random.default_rng(0), 48)
    return scenes, R.render_scenes(scenes)


def test_vocabulary_is_clevrs():
    assert VALUES["shape"] == ("cube", "sphere", "cylinder")
    assert COLORS == ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")
    assert COLOR_RGB["red"] == (173, 35, 35) and COLOR_RGB["yellow"] == (255, 238, 51)
    assert VALUES["material"] == ("rubber", "metal") and VALUES["size"] == ("large", "small")
    assert value_index("color", "gray") == 1 and value_index("size", "small") == 2
    with pytest.raises(ValueError):
        value_index("color", "pink")


def test_sampling_is_deterministic_and_seeded():
    a = R.sample_scenes(7, 20)
    b = R.sample_scenes(np.random.default_rng(7), 20)
    c = R.sample_scenes(8, 20)
    assert a == b and a != c
    assert R.scene_from_dicts(R.scene_to_dicts(a[0])) == a[0]


def test_render_shapes_ranges_and_determinism(batch):
    scenes, out = batch
    B = len(scenes)
    assert out.images.shape == (B, 3, 64, 64) and out.images.dtype == torch.float32
    assert out.instances.shape == (B, 64, 64) and out.attributes.shape == (B, 4, 64, 64)
    assert 0 <= out.images.min() and out.images.max() <= 1
    again = R.render_scenes(scenes[:5], chunk=2)
    assert torch.equal(again.images, out.images[:5]) and torch.equal(again.instances, out.instances[:5])
    big = R.render_scenes(scenes[:2], resolution=128)
    assert big.images.shape == (2, 3, 128, 128)


def test_object_counts_and_placement_rules(batch):
    scenes, _ = batch
    cfg = R.SCENE_PROFILES["cpu"]
    dirs = cfg.camera.ground_directions()
    counts = {len(s) for s in scenes}
    assert counts <= {1, 2, 3} and len(counts) == 3
    for s in scenes:
        assert R.scene_is_valid(s, cfg)
        for i, a in enumerate(s):
            assert abs(a.x) <= cfg.arena and abs(a.y) <= cfg.arena
            for b in s[:i]:
                assert math.hypot(a.x - b.x, a.y - b.y) - a.radius - b.radius >= cfg.min_dist
                for d in dirs.values():
                    assert not 0 < (a.x - b.x) * d[0] + (a.y - b.y) * d[1] < cfg.margin
    five = R.sample_scenes(3, 30, R.SCENE_PROFILES["full"])
    assert max(len(s) for s in five) == 5


def test_labels_match_the_scene(batch):
    scenes, out = batch
    for b, s in enumerate(scenes):
        inst = out.instances[b]
        assert set(inst.unique().tolist()) <= set(range(len(s) + 1))
        bg = inst == 0
        assert (out.attributes[b][:, bg] == 0).all()
        for k, o in enumerate(s):
            m = inst == k + 1
            for c, attr in enumerate(ATTRIBUTES):
                assert (out.attributes[b, c][m] == value_index(attr, getattr(o, attr))).all()


def test_every_object_is_visible_and_not_heavily_occluded(batch):
    scenes, out = batch
    for b, s in enumerate(scenes):
        alone = R.render_scenes([(o,) for o in s])
        for k in range(len(s)):
            full = int((alone.instances[k] == 1).sum())
            vis = int((out.instances[b] == k + 1).sum())
            assert vis >= 8, (b, k, vis)
            assert vis >= 0.5 * full, (b, k, vis, full)


def _chromaticity(rgb: np.ndarray) -> np.ndarray:
    return rgb / np.linalg.norm(rgb, axis=-1, keepdims=True).clip(1e-6)


def test_mask_colours_match_object_colours(batch):
    """The mean colour of every object's interior pixels is nearest (in chromaticity) to its CLEVR colour."""
    scenes, out = batch
    palette = _chromaticity(np.array([COLOR_RGB[c] for c in COLORS], dtype=np.float64))
    checked = 0
    for b, s in enumerate(scenes):
        inst = out.instances[b : b + 1].float()
        # interior = pixel and its 4 neighbours belong to the same object (no blending with the ground)
        pooled_min = -torch.nn.functional.max_pool2d(-inst, 3, 1, 1)[0]
        pooled_max = torch.nn.functional.max_pool2d(inst, 3, 1, 1)[0]
        for k, o in enumerate(s):
            m = (out.instances[b] == k + 1) & (pooled_min == k + 1) & (pooled_max == k + 1)
            if m.sum() < 4:
                continue
            rgb = out.images[b][:, m].T.double().numpy()
            if o.material == "metal":  # white highlights: use the darker half of the pixels
                lum = rgb.sum(1)
                rgb = rgb[lum <= np.median(lum)]
            mean = _chromaticity(rgb.mean(0))
            if o.color != "gray":
                assert COLORS[int(np.argmax(palette @ mean))] == o.color, (b, k, o)
            else:
                assert np.ptp(rgb.mean(0)) < 0.05
            checked += 1
    assert checked > 40


def test_metal_and_rubber_look_different():
    rub = R.SceneObject("cube", "blue", "rubber", "large", 0.0, 0.0, 30.0)
    out = R.render_scenes([(rub,), (R.edit_scene((rub,), 0, "material", "metal")[0],)])
    m = (out.instances[0] == 1) & (out.instances[1] == 1)
    a, b = out.images[0][:, m], out.images[1][:, m]
    assert (a - b).abs().mean() > 0.08
    # metal shows near-white highlights, rubber does not
    assert b.min(0).values.max() > a.min(0).values.max() + 0.15


def test_shadows_darken_the_ground_away_from_the_light():
    o = R.SceneObject("cube", "red", "rubber", "large", 0.0, 0.0, 0.0)
    out = R.render_scenes([(o,), ()])
    with_obj, empty = out.images
    obj = out.instances[0] == 1
    shadow = (with_obj.mean(0) < empty.mean(0) - 0.05) & ~obj
    assert shadow.sum() > 20
    # nothing else changes (up to one pixel of blending at the edges)
    changed = (with_obj - empty).abs().amax(0) > 1e-6
    near = torch.nn.functional.max_pool2d((shadow | obj).float()[None, None], 3, 1, 1)[0, 0] > 0
    assert not (changed & ~near).any()
    # the shadow falls away from the light: compare with the projection of the light direction on the ground
    light = np.asarray(R.DEFAULT_LIGHT) / np.linalg.norm(R.DEFAULT_LIGHT)
    uv, _ = R.DEFAULT_CAMERA.project(np.array([[0.0, 0.0, 0.0], [-light[0], -light[1], 0.0]]))
    expected = (uv[1] - uv[0])[::-1]  # (row, col)
    foot = uv[0][::-1] * 64 - 0.5  # the object's ground point, in (row, col) pixels
    got = torch.nonzero(shadow).float().mean(0).numpy() - foot
    assert got @ expected / np.linalg.norm(got) / np.linalg.norm(expected) > 0.9


def test_relations_obey_clevr_eps_rule(batch):
    scenes, _ = batch
    dirs = R.DEFAULT_CAMERA.ground_directions()
    for s in scenes:
        rel = R.relations(s)
        for i, a in enumerate(s):
            for j, b in enumerate(s):
                for name, d in dirs.items():
                    expect = j != i and (b.x - a.x) * d[0] + (b.y - a.y) * d[1] > 0.2
                    assert (j in rel[name][i]) == expect
                if j != i:
                    assert (j in rel["left"][i]) == (i in rel["right"][j])
                    assert (j in rel["front"][i]) == (i in rel["behind"][j])
                    # CLEVR's margin rule leaves no pair unrelated along either axis
                    assert (j in rel["left"][i]) != (j in rel["right"][i])
                    assert (j in rel["front"][i]) != (j in rel["behind"][i])
    # a hand-made case: an object further from the camera is "behind", and eps matters
    _, fwd, right, _ = R.DEFAULT_CAMERA.basis()
    f = fwd[:2] / np.linalg.norm(fwd[:2])
    a = R.SceneObject("cube", "red", "rubber", "small", 0.0, 0.0)
    far = R.SceneObject("cube", "red", "rubber", "small", 1.0 * f[0], 1.0 * f[1])
    near_eps = R.SceneObject("cube", "red", "rubber", "small", 0.1 * f[0], 0.1 * f[1])
    assert R.relations((a, far))["behind"][0] == [1]
    assert R.relations((a, far))["front"][1] == [0]
    assert R.relations((a, near_eps))["behind"][0] == []
    # "left" is towards the left of the image
    left = R.SceneObject("cube", "red", "rubber", "small", -1.5 * right[0], -1.5 * right[1])
    out = R.render_scenes([(a, left)])
    cols = [torch.nonzero(out.instances[0] == k)[:, 1].float().mean() for k in (1, 2)]
    assert R.relations((a, left))["left"][0] == [1] and cols[1] < cols[0]


@pytest.mark.parametrize("seed", range(6))
def test_edit_changes_exactly_one_attribute(seed):
    rng = np.random.default_rng(seed)
    scene = R.sample_scene(rng)
    orig, edited, new, e = R.render_edit(scene, rng)
    diffs = [
        (i, a)
        for i, (o, n) in enumerate(zip(scene, new, strict=True))
        for a in ATTRIBUTES
        if getattr(o, a) != getattr(n, a)
    ]
    assert diffs == [(e.index, e.attribute)]
    assert getattr(new[e.index], e.attribute) == e.new != e.old == getattr(scene[e.index], e.attribute)
    assert all((o.x, o.y, o.rotation) == (n.x, n.y, n.rotation) for o, n in zip(scene, new, strict=True))
    assert R.scene_is_valid(new)
    c = ATTRIBUTES.index(e.attribute)
    changed = orig.attributes[0, c] != edited.attributes[0, c]
    assert changed.any()
    if e.attribute in (
        "color",
        "material",
    ):  # geometry untouched: same masks, pixels change only on the object
        assert torch.equal(orig.instances, edited.instances)
        others = [a for a in range(4) if a != c]
        assert torch.equal(orig.attributes[0, others], edited.attributes[0, others])
        diff = (orig.images[0] - edited.images[0]).abs().amax(0) > 1e-6
        obj = (orig.instances[0] == e.index + 1).float()[None, None]
        near_obj = (
            torch.nn.functional.max_pool2d(obj, 3, 1, 1)[0, 0] > 0
        )  # edge pixels blend object and ground
        assert diff.any() and not (diff & ~near_obj).any()


def test_edit_scene_rejects_unknown_values():
    s = R.sample_scene(np.random.default_rng(1))
    with pytest.raises(ValueError):
        R.edit_scene(s, 0, "color", "pink")
    with pytest.raises(ValueError):
        R.edit_scene(s, 0, "weight", "heavy")


def test_cuda_render_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    scenes = R.sample_scenes(0, 8)
    a, b = R.render_scenes(scenes), R.render_scenes(scenes, device="cuda")
    assert (a.images - b.images.cpu()).abs().max() < 1e-3
    assert (a.instances != b.instances.cpu()).float().mean() < 1e-3
