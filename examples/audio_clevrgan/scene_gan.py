"""A scene-coded generator: z -> a scene drawn by the renderer's own sampler -> a learned network that draws it.

Why this design (``checkpoints/README.md`` and ``benchmarks/results/gan_recipes.md`` have the measurements): on two
CPU cores an unconditional GAN learns to draw CLEVR objects far too slowly. The best pixel-GAN recipe reached 4.9%
confidently read objects after 900 CPU seconds and a projected discriminator collapsed, while the committed GPU
generator (8,000 steps) still draws rounded blobs. Most of that budget goes to discovering *what* a scene is (how
many objects, where, which attributes), which the renderer already knows. This generator keeps the structure that
GAN Dissection and the paper edit (``z (B, 128) ~ N(0, I)`` in, named layers, a ``C x 8 x 8`` map ``layer4`` that
edits ablate, ``decode`` from it) and splits the work:

* **Scene from z (fixed, not learned).** ``z``'s entries, mapped to uniforms by the normal CDF, are the random
  numbers that :func:`audio_clevrgan.render.sample_scene` consumes (number of objects, then per candidate object
  size, position, shape, colour, material, rotation; after 128 numbers a generator seeded by z's bytes takes over).
  So a latent is a valid scene of the renderer's distribution, and :meth:`SceneCodedGenerator.scenes` says which.
* **Drawing (learned).** ``layer1`` paints each object into the 8x8 grid: an MLP of the object's attribute
  embeddings and of each cell's position relative to the object's screen disc gives a feature vector and an
  opacity logit per cell; objects and a learned background are composited by a softmax over opacities (so the
  network can learn occlusion from depth). ``layer2``-``layer4`` are 3x3 convolutions at 8x8 and the rest upsample
  to 64x64 like :class:`audio_clevrgan.gan.Generator`.
* **Training** pairs each latent with the renderer's image of its scene: an L1 loss (object pixels weighted up),
  optionally a perceptual loss in the frozen feature network's space and an adversarial (hinge) loss from a pixel
  discriminator. The network never sees the renderer's code, only its images.

What this means for the quality goals: attribute frequencies and the objects-per-image histogram follow the
renderer's sampler by construction (they measure the drawing only through whether a reader can find each object);
whether shapes and materials can be read is entirely learned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .gan import GBlock, NamedLayers, OutputBlock, d_loss, discriminate, ema_update, g_loss
from .render import (
    _FOOTPRINT,
    DEFAULT_CAMERA,
    SCENE_PROFILES,
    Camera,
    Scene,
    SceneConfig,
    _disc,
    sample_scene,
)
from .vocab import ATTRIBUTES, VALUES

# --------------------------------------------------------------------------------------------------------------
# z -> scene
# --------------------------------------------------------------------------------------------------------------


class LatentStream:
    """The random numbers of one latent, with the subset of ``numpy.random.Generator``'s API that
    :func:`~audio_clevrgan.render.sample_scene` uses (``integers``, ``uniform``).

    Number ``i`` is ``Phi(z[i])`` (the standard normal CDF, so uniform on (0, 1) when ``z ~ N(0, I)``); once the
    latent's entries are used up, a generator seeded by the latent's float32 bytes continues (rare: the sampler
    rejected many candidates).
    """

    def __init__(self, z: np.ndarray):
        self._z = np.asarray(z, dtype=np.float32).reshape(-1)
        self._u = [0.5 * (1.0 + math.erf(float(v) / math.sqrt(2.0))) for v in self._z]
        self._i = 0
        self._rng: np.random.Generator | None = None

    def _next(self) -> float:
        if self._i < len(self._u):
            v = self._u[self._i]
            self._i += 1
            return min(max(v, 0.0), 1.0 - 1e-12)
        if self._rng is None:
            self._rng = np.random.default_rng(np.frombuffer(self._z.tobytes(), dtype=np.uint32))
        return float(self._rng.random())

    @property
    def used(self) -> int:
        """How many of the latent's own entries have been consumed."""
        return self._i

    def integers(self, low: int, high: int | None = None) -> int:
        if high is None:
            low, high = 0, low
        return low + min(int(self._next() * (high - low)), high - low - 1)

    def uniform(self, low: float = 0.0, high: float = 1.0, size=None):
        if size is None:
            return low + (high - low) * self._next()
        n = int(np.prod(size))
        return np.array([low + (high - low) * self._next() for _ in range(n)]).reshape(size)


def scene_from_z(z: np.ndarray | torch.Tensor, cfg: SceneConfig = SCENE_PROFILES["cpu"]) -> Scene:
    """The scene that latent ``z`` ``(z_dim,)`` stands for: a pure function of z, of the renderer's distribution
    when ``z ~ N(0, I)``."""
    if isinstance(z, torch.Tensor):
        z = z.detach().float().cpu().numpy()
    return sample_scene(LatentStream(z), cfg)  # type: ignore[arg-type]  # duck-typed generator


#: per object: attribute indices (4), then geometry: screen centre u, v (0..1), screen radius, depth, sin/cos(4 rot)
_N_GEOM = 6


def encode_scenes(scenes: Sequence[Scene], max_objects: int, camera: Camera = DEFAULT_CAMERA) -> torch.Tensor:
    """Scenes -> ``(B, K, 1 + 4 + 6)`` float32: present flag, attribute indices (``ATTRIBUTES`` order), geometry.

    Geometry is the object's screen disc as the renderer's placement rules see it (centre, radius in image
    fractions), its depth along the view axis (centred on the camera distance) and its rotation as sin/cos of
    4x the angle (a cube looks the same every 90 degrees).
    """
    out = torch.zeros(len(scenes), max_objects, 1 + len(ATTRIBUTES) + _N_GEOM)
    for b, scene in enumerate(scenes):
        if len(scene) > max_objects:
            raise ValueError(f"scene {b} has {len(scene)} objects, the generator draws at most {max_objects}")
        for k, o in enumerate(scene):
            u, v, r, depth = _disc(o, camera)
            rot = math.radians(o.rotation) * 4
            idx = [VALUES[a].index(getattr(o, a)) for a in ATTRIBUTES]
            out[b, k] = torch.tensor(
                [1.0, *idx, u, v, r, (depth - camera.distance) / 3, math.sin(rot), math.cos(rot)]
            )
    return out


# --------------------------------------------------------------------------------------------------------------
# The drawing network
# --------------------------------------------------------------------------------------------------------------


class ObjectPainter(nn.Module):
    """``layer1``: scene codes ``(B, K, 11)`` -> ``(B, C, G, G)``, every object painted into a G x G grid.

    For object k and cell c the MLP sees the object's attribute embeddings and the cell centre's offset from the
    object's screen disc (in radii and in cells, with a few Fourier features), its radius, depth and rotation;
    it returns C features and an opacity logit. Cells take the softmax-over-opacity mixture of the objects and a
    learned background map (opacity 0). Absent objects have opacity -inf.
    """

    def __init__(self, channels: int, hidden: int = 128, embed: int = 64, grid: int = 8):
        super().__init__()
        self.grid, self.channels = grid, channels
        self.embeddings = nn.ModuleList(nn.Embedding(len(VALUES[a]), embed) for a in ATTRIBUTES)
        self.n_geom = 16
        self.from_object = nn.Linear(embed, hidden)
        self.from_cell = nn.Linear(self.n_geom, hidden, bias=False)
        self.mlp = nn.Sequential(
            nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, channels + 1)
        )
        self.background = nn.Parameter(torch.zeros(channels, grid, grid))
        centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
        gv, gu = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("cells", torch.stack([gu.flatten(), gv.flatten()], -1), persistent=False)  # (G*G, 2)

    def cell_inputs(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scene codes ``(B, K, 11)`` -> (present Bool[B, K], attribute indices Long[B, K, 4], per object and cell
        the geometry features Float[B, K, G*G, 16])."""
        B, K, _ = codes.shape
        present = codes[..., 0] > 0.5
        idx = codes[..., 1:5].long().clamp_min(0)
        geom = codes[..., 5:]
        centre, radius = geom[..., None, 0:2], geom[..., None, 2:3].clamp_min(1e-3)  # (B, K, 1, 2), (B, K, 1, 1)
        off = self.cells - centre  # (B, K, P, 2)
        rel = off / radius
        four = torch.cat([torch.sin(math.pi * rel * f) for f in (0.5, 1.0)] + [torch.cos(math.pi * rel * f) for f in (0.5, 1.0)], -1)
        P = self.cells.shape[0]
        rest = geom[..., None, 2:].expand(B, K, P, _N_GEOM - 2) * torch.tensor([self.grid, 1.0, 1.0, 1.0], device=codes.device)
        return present, idx, torch.cat([rel.clamp(-6, 6), off * self.grid, rest, four], -1)

    def composite(self, feats: torch.Tensor, alpha: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Per object and cell features ``(B, K, P, C)`` and opacity logits ``(B, K, P)`` -> the ``(B, C, G, G)``
        softmax-over-opacity mixture with the learned background (opacity 0; absent objects never show)."""
        B, K, P, C = feats.shape
        alpha = alpha.masked_fill(~present[..., None], float("-inf"))
        bg = self.background.flatten(1).T[None, None]  # (1, 1, P, C)
        feats = torch.cat([bg.expand(B, 1, P, C), feats], 1)
        alpha = torch.cat([torch.zeros(B, 1, P, device=feats.device), alpha], 1)
        w = torch.softmax(alpha, dim=1)[..., None]  # (B, K + 1, P, 1)
        mixed = (w * feats).sum(1)  # (B, P, C)
        return mixed.transpose(1, 2).reshape(B, C, self.grid, self.grid)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        present, idx, cell_in = self.cell_inputs(codes)
        emb = sum(e(idx[..., i]) for i, e in enumerate(self.embeddings))  # (B, K, E)
        out = self.mlp(self.from_object(emb)[:, :, None] + self.from_cell(cell_in))  # (B, K, P, C + 1)
        return self.composite(out[..., :-1], out[..., -1], present)


#: the value of each factored attribute that owns no units in a factored painter: ablating the units of another
#: value redraws the object with this one (size is left to the geometry: the screen radius is part of it)
FACTOR_DEFAULTS: dict[str, str] = {"shape": "sphere", "color": "gray", "material": "rubber"}


def factor_groups() -> list[tuple[str, str]]:
    """The (attribute, value) of every unit group of a factored ``layer4``, in channel order after the shared
    units: cube, cylinder, the seven colours but gray, metal."""
    return [(a, v) for a in FACTOR_DEFAULTS for v in VALUES[a] if v != FACTOR_DEFAULTS[a]]


def factored_unit_roles(channels: int, units: int) -> list[str]:
    """The role of every channel of a factored ``layer4`` of ``channels`` units with value groups of ``units``:
    ``"shared"`` (geometry, every object) or ``"attribute=value"`` (see :class:`FactoredPainter`). For reading
    which units an edit ablates; no generator of negatives uses it."""
    groups = factor_groups()
    return ["shared"] * (channels - units * len(groups)) + [f"{a}={v}" for a, v in groups for _ in range(units)]


class FactoredPainter(ObjectPainter):
    """``layer1`` of an attribute-factored generator: scene codes ``(B, K, 11)`` -> ``(B, C, G, G)`` whose channels
    are ``C - 10 U`` shared units, then 10 groups of ``U`` units, one per (attribute, value) of :func:`factor_groups`.

    The shared units and every object's opacity are functions of the object's geometry alone (screen disc, depth,
    rotation), blind to its attributes: the disc is the widest shape's footprint whatever the shape. A value group's units are ``relu(MLP(geometry))`` for objects of that value
    and exactly 0 for every other object, composited like the shared units. So an object drawn with the default
    value (sphere, gray, rubber) has all units of that attribute's groups at 0, and zeroing the units of its value
    in its cells gives exactly the map of the same scene with that attribute set to the default — the edit that
    GAN Dissection's ablation makes, by construction. ``layer2``-``layer4`` of the factored generator process the
    shared units only and pass the groups through, so ``layer4`` keeps this structure.
    """

    def __init__(self, channels: int, units: int, hidden: int = 128, grid: int = 8):
        groups = factor_groups()
        shared = channels - units * len(groups)
        if shared < 1:
            raise ValueError(f"a factored layer of {channels} channels cannot hold {len(groups)} groups of {units} "
                             "units and a shared unit")
        super().__init__(channels, hidden=hidden, grid=grid)
        self.units, self.shared = units, shared
        self.embeddings = nn.ModuleList()  # the shared units and opacities see no attribute
        self.from_object = None
        # which units each object's values switch on: (attribute index, value index) -> its group's channels
        mask = torch.zeros(len(ATTRIBUTES), max(len(VALUES[a]) for a in ATTRIBUTES), units * len(groups))
        for g, (a, v) in enumerate(groups):
            mask[ATTRIBUTES.index(a), VALUES[a].index(v), g * units:(g + 1) * units] = 1.0
        self.register_buffer("value_units", mask, persistent=False)
        # the renderer's screen disc grows with a shape's footprint; the painter sees every object with the widest
        # footprint, so that its geometry (and the shared units, the opacities) cannot tell the shape either
        widest = max(_FOOTPRINT.values())
        self.register_buffer("disc_scale", torch.tensor([widest / _FOOTPRINT[v] for v in VALUES["shape"]]),
                             persistent=False)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        shape = codes[..., 1].long().clamp(0, len(VALUES["shape"]) - 1)
        codes = torch.cat([codes[..., :7], codes[..., 7:8] * self.disc_scale[shape][..., None], codes[..., 8:]], -1)
        present, idx, cell_in = self.cell_inputs(codes)
        out = self.mlp(self.from_cell(cell_in))  # (B, K, P, C + 1)
        attr = torch.arange(len(ATTRIBUTES), device=codes.device)
        on = self.value_units[attr, idx].amax(2)  # (B, K, 10 U): the units of the object's own values
        groups = F.relu(out[..., self.shared:-1]) * on[:, :, None]
        return self.composite(torch.cat([out[..., :self.shared], groups], -1), out[..., -1], present)


class SharedUnitsBlock(GBlock):
    """A :class:`audio_clevrgan.gan.GBlock` on the first ``shared`` channels of ``(B, C, G, G)``; the other
    channels (a factored layer's value groups) pass through unchanged."""

    def __init__(self, channels: int, shared: int):
        super().__init__(shared, shared)
        self.shared = shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([super().forward(x[:, :self.shared]), x[:, self.shared:]], 1)


class SceneCodedGenerator(NamedLayers, nn.Module):
    """z ``(B, z_dim)`` -> image ``(B, 3, R, R)`` (unclamped; ``generate`` clamps to [-1, 1]).

    The same interface as :class:`audio_clevrgan.gan.Generator` (``layer_names``, ``features``, ``decode``,
    ``generate``, forward hooks on ``G.layer4``), plus :meth:`scenes`, the ground truth of each latent. Children:
    ``layer1`` (:class:`ObjectPainter`, ``g_channels[1] x 8 x 8``), ``layer2``-``layer4`` (3x3 convolutions at 8x8;
    ``layer4`` is the map that edits ablate), then per resolution an upsampling convolution and, up to
    ``g_double_upto``, a second one; ``output_RxR``. ``g_channels[0]`` is the painter's hidden width.
    """

    def __init__(self, config):
        super().__init__()
        ch = config.g_channels
        self.config = config
        self.scene_config = SCENE_PROFILES[config.scene_profile]
        if config.g_factored:
            painter = FactoredPainter(ch[1], config.g_factored, hidden=ch[0])
            self.add_module("layer1", painter)
            for i in (2, 3, 4):
                self.add_module(f"layer{i}", SharedUnitsBlock(ch[1], painter.shared))
            # the attributes meet the geometry only after layer4: two mixing convolutions at 8x8
            self.add_module("layer5", GBlock(ch[1], ch[1]))
            self.add_module("layer6", GBlock(ch[1], ch[1]))
            n = 7
        else:
            self.add_module("layer1", ObjectPainter(ch[1], hidden=ch[0]))
            self.add_module("layer2", GBlock(ch[1], ch[1]))
            self.add_module("layer3", GBlock(ch[1], ch[1]))
            self.add_module("layer4", GBlock(ch[1], ch[1]))
            n = 5
        for i in range(2, len(ch)):
            self.add_module(f"layer{n}", GBlock(ch[i - 1], ch[i], upsample=True))
            n += 1
            if not config.g_double_upto or 4 * 2**i <= config.g_double_upto:
                self.add_module(f"layer{n}", GBlock(ch[i], ch[i]))
                n += 1
        self.add_module(f"output_{config.resolution}x{config.resolution}", OutputBlock(ch[-1]))

    def scenes(self, z: torch.Tensor) -> list[Scene]:
        """The scene of every latent row of ``z`` ``(B, z_dim)``: what the image is meant to show."""
        return [scene_from_z(row, self.scene_config) for row in z.detach().float().cpu().numpy()]

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, z_dim)`` -> the painter's input ``(B, K, 11)`` on z's device (not differentiable in z)."""
        return encode_scenes(self.scenes(z), self.scene_config.max_objects).to(self._device())

    def _device(self) -> torch.device:
        return self.layer1.background.device

    def _run(self, x: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
        for name in names:
            x = getattr(self, name)(x)
        return x

    def forward(self, z: torch.Tensor | None = None, codes: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, z_dim)`` (or precomputed ``codes`` ``(B, K, 11)``) -> ``(B, 3, R, R)``, unclamped."""
        if codes is None:
            if z is None:
                raise TypeError("need z or codes")
            codes = self.codes(z.flatten(1))
        return self._run(codes, self.layer_names)

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], ``(B, 3, R, R)``, from latents ``(B, z_dim)`` (no gradient)."""
        return self(z).clamp(-1, 1)

    def features(self, z: torch.Tensor, upto: str = "layer4") -> torch.Tensor:
        """Run the layers up to and including ``upto``; for ``layer4``: ``(B, z_dim) -> (B, C, 8, 8)``."""
        names = self.layer_names
        if upto not in names:
            raise KeyError(upto)
        return self._run(self.codes(z.flatten(1)), names[: names.index(upto) + 1])


# --------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------


def latent_bank(seed: int, n: int, z_dim: int) -> torch.Tensor:
    """The training latents ``(n, z_dim)`` float32: ``default_rng([seed, 7])`` normals, row k independent of n."""
    rng = np.random.default_rng([seed, 7])
    return torch.from_numpy(rng.standard_normal((n, z_dim), dtype=np.float32))


def perceptual_distance(encoder: nn.Module, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the frozen feature network's maps of ``fake`` and ``real`` ``(B, 3, R, R)`` in
    [-1, 1], summed over its scales (gradients flow into ``fake`` only)."""
    with torch.no_grad():
        fr = encoder.features((real + 1) / 2)
    ff = encoder.features((fake + 1) / 2)
    return sum(F.l1_loss(a, b) for a, b in zip(ff, fr, strict=True))


def scene_train_step(
    st,
    real: torch.Tensor,
    codes: torch.Tensor,
    objects: torch.Tensor,
    encoder: nn.Module | None = None,
    g: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """One step of the scene-coded generator (and of the discriminator when ``adv_weight > 0``).

    Args:
        st: a :class:`audio_clevrgan.gan.GanState` whose ``G`` is a :class:`SceneCodedGenerator`.
        real: ``(B, 3, R, R)`` the renderer's images of the batch's scenes, in [-1, 1].
        codes: ``(B, K, 11)`` the painter's input for the same scenes.
        objects: ``(B, 1, R, R)`` 1 on object pixels (the renderer's instance map > 0), else 0.
        encoder: the frozen feature network of the perceptual loss (needed when ``perc_weight > 0``).
    """
    cfg = st.config
    G, D = st.G, st.D
    stats: dict[str, torch.Tensor] = {}
    fake = G(codes=codes)
    if cfg.adv_weight > 0:
        st.opt_d.zero_grad(set_to_none=True)
        loss_d = d_loss(cfg, discriminate(D, real, g), discriminate(D, fake.detach(), g))
        loss_d.backward()
        st.opt_d.step()
        stats["loss_d"] = loss_d.detach()
    st.opt_g.zero_grad(set_to_none=True)
    weight = 1 + cfg.obj_weight * objects
    l1 = ((fake - real).abs() * weight).mean() / weight.mean()
    loss = l1
    stats["l1"] = l1.detach()
    if cfg.perc_weight > 0:
        perc = perceptual_distance(encoder, fake, real)
        loss = loss + cfg.perc_weight * perc
        stats["perc"] = perc.detach()
    if cfg.adv_weight > 0:
        d_params = [p for p in D.parameters() if p.requires_grad]
        for p in d_params:
            p.requires_grad_(False)
        adv = g_loss(cfg, discriminate(D, fake, g))
        for p in d_params:
            p.requires_grad_(True)
        loss = loss + cfg.adv_weight * adv
        stats["loss_g"] = adv.detach()
    loss.backward()
    st.opt_g.step()
    st.step += 1
    decay = min(cfg.ema_decay, (1 + st.step) / (10 + st.step))
    ema_update(st.G_ema, G, decay)
    return stats


__all__ = [
    "FACTOR_DEFAULTS",
    "FactoredPainter",
    "LatentStream",
    "ObjectPainter",
    "SharedUnitsBlock",
    "SceneCodedGenerator",
    "encode_scenes",
    "factor_groups",
    "factored_unit_roles",
    "latent_bank",
    "perceptual_distance",
    "scene_from_z",
    "scene_train_step",
]
