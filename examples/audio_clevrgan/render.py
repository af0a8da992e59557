"""A small, vectorised CLEVR-like scene renderer (torch, CPU or CUDA).

Scenes follow CLEVR's vocabulary and placement rules (:mod:`audio_clevrgan.vocab`): cubes, spheres and cylinders
in 8 colours, rubber or metal, large or small, standing on a ground plane seen by a perspective camera. Images are
ray cast analytically (one primary ray per sub-pixel, one shadow ray per ground point towards a directional key
light), so shading, highlights and shadows need no mesh and the whole batch is a handful of tensor operations.

A scene is a plain data structure: a tuple of :class:`SceneObject` (shape, color, material, size, x, y, rotation).
Every random choice is drawn from a :class:`numpy.random.Generator`, and scene validity (distances, CLEVR margins,
in-frame, no heavy occlusion) is decided analytically in float64 on the host, so a seed gives the same scenes on
every device. Rendering is a pure function of the scene.

World frame: ground plane z = 0, z up, units as in CLEVR (large radius 0.7, small 0.35, positions within
``[-arena, arena]``). Image frame: row 0 is the top, column 0 the left.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .vocab import (
    ATTRIBUTES,
    COLOR_RGB,
    COLORS,
    MATERIALS,
    RELATION_EPS,
    RELATIONS,
    SHAPES,
    SIZE_SCALE,
    SIZES,
    VALUES,
)

# --------------------------------------------------------------------------------------------------------------
# Scene description
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene.

    ``x, y`` is the ground position of the object's centre (world units), ``rotation`` its rotation about the
    vertical axis in degrees (visible on cubes only).
    """

    shape: str
    color: str
    material: str
    size: str
    x: float
    y: float
    rotation: float = 0.0

    def __post_init__(self) -> None:
        for attr in ATTRIBUTES:
            if getattr(self, attr) not in VALUES[attr]:
                raise ValueError(f"unknown {attr} {getattr(self, attr)!r}; expected one of {VALUES[attr]}")

    @property
    def radius(self) -> float:
        """CLEVR scale of the object: sphere radius, cube half-side, cylinder radius (half-height)."""
        return SIZE_SCALE[self.size]

    @property
    def position(self) -> tuple[float, float]:
        return (self.x, self.y)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> SceneObject:
        return SceneObject(**{f.name: d[f.name] for f in dataclasses.fields(SceneObject) if f.name in d})


#: A scene is a tuple of objects. Object ``k`` carries instance id ``k + 1`` in rendered instance masks.
Scene = tuple[SceneObject, ...]


def scene_to_dicts(scene: Scene) -> list[dict]:
    """JSON-friendly form of a scene: a list of dicts."""
    return [o.to_dict() for o in scene]


def scene_from_dicts(items: Sequence[dict]) -> Scene:
    return tuple(SceneObject.from_dict(d) for d in items)


# --------------------------------------------------------------------------------------------------------------
# Camera and light
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    """A pinhole camera looking at ``target`` from ``distance`` at the given elevation/azimuth (degrees).

    As in CLEVR the camera stands at positive x, negative y, looking down at the origin. ``fov`` is the full
    field of view (degrees) of the square image.
    """

    distance: float = 10.0
    elevation: float = 40.0
    azimuth: float = -50.0
    fov: float = 30.0
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Camera position, forward, right and up unit vectors (float64, shape (3,) each, read-only)."""
        return _camera_basis(self)

    def ground_directions(self) -> dict[str, np.ndarray]:
        """CLEVR's relation directions: camera axes projected on the ground plane, unit length, shape (2,)."""
        _, fwd, right, _ = self.basis()
        behind = fwd[:2] / np.linalg.norm(fwd[:2])
        r = right[:2] / np.linalg.norm(right[:2])
        return {"left": -r, "right": r, "front": -behind, "behind": behind}

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points ``(N, 3)`` to normalised image coordinates.

        Returns ``(uv, depth)``: ``uv`` is ``(N, 2)`` with (column, row) in [0, 1] for points inside the frame
        (0, 0 = top-left corner), ``depth`` is ``(N,)``, the distance along the viewing axis.
        """
        pos, fwd, right, up = self.basis()
        rel = np.asarray(points, dtype=np.float64) - pos
        depth = rel @ fwd
        half = math.tan(math.radians(self.fov) / 2)
        u = (rel @ right) / depth / half
        v = -(rel @ up) / depth / half
        return np.stack([(u + 1) / 2, (v + 1) / 2], axis=-1), depth

    def rays(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Primary rays through pixel centres: origin ``(3,)`` and unit directions ``(height * width, 3)``."""
        pos, fwd, right, up = self.basis()
        half = math.tan(math.radians(self.fov) / 2)
        u = ((np.arange(width) + 0.5) / width * 2 - 1) * half
        v = ((np.arange(height) + 0.5) / height * 2 - 1) * half
        vv, uu = np.meshgrid(v, u, indexing="ij")
        d = fwd[None, None] + uu[..., None] * right - vv[..., None] * up
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        return pos, d.reshape(-1, 3)


@functools.lru_cache(maxsize=64)
def _camera_basis(cam: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    el, az = math.radians(cam.elevation), math.radians(cam.azimuth)
    t = np.asarray(cam.target, dtype=np.float64)
    pos = t + cam.distance * np.array(
        [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
    )
    fwd = t - pos
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    for a in (pos, fwd, right, up):
        a.setflags(write=False)
    return pos, fwd, right, up


DEFAULT_CAMERA = Camera()

#: Direction *towards* the key light (unit vector, world frame): high, from the camera's left.
DEFAULT_LIGHT = (-0.35, -0.75, 1.0)


# --------------------------------------------------------------------------------------------------------------
# Scene sampling (CLEVR's rules)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are sampled. Defaults follow CLEVR's rules, scaled to small images with few objects.

    * ``min_objects``/``max_objects``: number of objects, uniform (the ``cpu`` default is 1-3; CLEVR uses 3-10).
    * ``arena``: positions x, y ~ U(-arena, arena) (CLEVR: 3).
    * ``min_dist``: free space between two objects' footprints (CLEVR: 0.25).
    * ``margin``: along each of left/right/front/behind, two objects' centres differ by at least this (CLEVR: 0.4),
      so every pair has unambiguous relations for ``RELATION_EPS`` = 0.2.
    * ``max_occlusion``: largest fraction of an object's screen footprint that nearer objects may cover.
    * ``frame_margin``: objects must lie this far (fraction of the image side) inside the frame.
    """

    min_objects: int = 1
    max_objects: int = 3
    arena: float = 3.0
    min_dist: float = 0.25
    margin: float = 0.4
    max_occlusion: float = 0.3
    frame_margin: float = 0.02
    max_retries: int = 50
    camera: Camera = DEFAULT_CAMERA

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )


#: Profiles: ``cpu`` is the default (1-3 objects); ``full`` uses up to 5 objects.
SCENE_PROFILES: dict[str, SceneConfig] = {
    "cpu": SceneConfig(),
    "full": SceneConfig(min_objects=1, max_objects=5),
}

# Screen-footprint radius of each shape, as a multiple of its scale, for the analytic occlusion/frame test.
_FOOTPRINT = {"sphere": 1.0, "cylinder": 1.2, "cube": 1.35}


@functools.lru_cache(maxsize=64)
def _basis_floats(cam: Camera) -> tuple:
    pos, fwd, right, up = cam.basis()
    return tuple(pos), tuple(fwd), tuple(right), tuple(up), math.tan(math.radians(cam.fov) / 2)


def _disc(o: SceneObject, camera: Camera) -> tuple[float, float, float, float]:
    """One object as a disc on the image (plain floats): centre (u, v) in [0, 1], radius, depth."""
    pos, fwd, right, up, half = _basis_floats(camera)
    rad = _FOOTPRINT[o.shape] * o.radius
    out = []
    for dx in (0.0, rad):  # the centre, and a point rad further along the camera's right axis
        rel = (o.x + dx * right[0] - pos[0], o.y + dx * right[1] - pos[1], o.radius + dx * right[2] - pos[2])
        depth = rel[0] * fwd[0] + rel[1] * fwd[1] + rel[2] * fwd[2]
        u = (rel[0] * right[0] + rel[1] * right[1] + rel[2] * right[2]) / depth / half
        v = -(rel[0] * up[0] + rel[1] * up[1] + rel[2] * up[2]) / depth / half
        out.append(((u + 1) / 2, (v + 1) / 2, depth))
    (u0, v0, d0), (u1, v1, _) = out
    return u0, v0, math.hypot(u1 - u0, v1 - v0), d0


def _screen_discs(scene: Scene, camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Approximate every object by a disc on the image: centres ``(N, 2)``, radii ``(N,)``, depths ``(N,)``."""
    d = np.array([_disc(o, camera) for o in scene], dtype=np.float64).reshape(-1, 4)
    return d[:, :2], d[:, 2], d[:, 3]


def _disc_overlap(d: float, r1: float, r2: float) -> float:
    """Area of the intersection of two discs of radii r1, r2 whose centres are d apart."""
    if d >= r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return math.pi * min(r1, r2) ** 2
    a1 = r1 * r1 * math.acos((d * d + r1 * r1 - r2 * r2) / (2 * d * r1))
    a2 = r2 * r2 * math.acos((d * d + r2 * r2 - r1 * r1) / (2 * d * r2))
    a3 = 0.5 * math.sqrt((-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2))
    return a1 + a2 - a3


def occlusion_fractions(scene: Scene, camera: Camera = DEFAULT_CAMERA) -> np.ndarray:
    """Approximate fraction of each object's screen footprint covered by nearer objects, shape ``(N,)``."""
    discs = [_disc(o, camera) for o in scene]
    occ = np.zeros(len(scene))
    for i, (ui, vi, ri, di) in enumerate(discs):
        area = math.pi * ri * ri
        for j, (uj, vj, rj, dj) in enumerate(discs):
            if j != i and dj < di:
                occ[i] += _disc_overlap(math.hypot(ui - uj, vi - vj), ri, rj) / area
    return occ


def _pair_ok(a: SceneObject, b: SceneObject, cfg: SceneConfig, dirs: dict[str, np.ndarray]) -> bool:
    dx, dy = a.x - b.x, a.y - b.y
    if math.hypot(dx, dy) - a.radius - b.radius < cfg.min_dist:
        return False
    for name in RELATIONS:
        m = dx * dirs[name][0] + dy * dirs[name][1]
        if 0 < m < cfg.margin:  # CLEVR's margin rule, tested along every cardinal direction
            return False
    return True


def _in_frame(scene: Scene, cfg: SceneConfig) -> np.ndarray:
    m = cfg.frame_margin
    ok = []
    for o in scene:
        u, v, r, _ = _disc(o, cfg.camera)
        ok.append(u - r >= m and v - r >= m and u + r <= 1 - m and v + r <= 1 - m)
    return np.array(ok, dtype=bool)


def scene_is_valid(scene: Scene, cfg: SceneConfig = SCENE_PROFILES["cpu"]) -> bool:
    """Whether a scene obeys the placement rules of ``cfg`` (distances, margins, frame, occlusion)."""
    dirs = cfg.camera.ground_directions()
    for i in range(len(scene)):
        for j in range(i):
            if not _pair_ok(scene[i], scene[j], cfg, dirs):
                return False
    if not np.all(_in_frame(scene, cfg)):
        return False
    return bool(np.all(occlusion_fractions(scene, cfg.camera) <= cfg.max_occlusion))


def sample_scene(rng: np.random.Generator, cfg: SceneConfig = SCENE_PROFILES["cpu"]) -> Scene:
    """Draw one valid scene (CLEVR's procedure: place objects one by one, restart the scene when stuck).

    Attributes are drawn uniformly and independently; rotation ~ U(0, 360).
    """
    dirs = cfg.camera.ground_directions()
    while True:
        n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        objs: list[SceneObject] = []
        for _ in range(n):
            placed = False
            for _ in range(cfg.max_retries):
                size = SIZES[int(rng.integers(len(SIZES)))]
                x, y = (float(v) for v in rng.uniform(-cfg.arena, cfg.arena, size=2))
                shape = SHAPES[int(rng.integers(len(SHAPES)))]
                cand = SceneObject(
                    shape=shape,
                    color=COLORS[int(rng.integers(len(COLORS)))],
                    material=MATERIALS[int(rng.integers(len(MATERIALS)))],
                    size=size,
                    x=x,
                    y=y,
                    rotation=float(rng.uniform(0.0, 360.0)),
                )
                if all(_pair_ok(cand, o, cfg, dirs) for o in objs) and _in_frame((cand,), cfg)[0]:
                    objs.append(cand)
                    placed = True
                    break
            if not placed:
                break
        if len(objs) == n and np.all(occlusion_fractions(tuple(objs), cfg.camera) <= cfg.max_occlusion):
            return tuple(objs)


def sample_scenes(
    rng: np.random.Generator | int, n: int, cfg: SceneConfig = SCENE_PROFILES["cpu"]
) -> list[Scene]:
    """Draw ``n`` scenes; ``rng`` is a numpy Generator or an integer seed."""
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    return [sample_scene(rng, cfg) for _ in range(n)]


def relations(
    scene: Scene, camera: Camera = DEFAULT_CAMERA, eps: float = RELATION_EPS
) -> dict[str, list[list[int]]]:
    """CLEVR's relations: ``rel[name][i]`` lists every j such that object j is ``name`` of object i.

    j is ``name`` of i iff (pos_j - pos_i) . dir_name > eps, with dir_name the camera axis projected on the
    ground (``Camera.ground_directions``).
    """
    dirs = camera.ground_directions()
    out: dict[str, list[list[int]]] = {}
    for name in RELATIONS:
        rows = []
        for i, a in enumerate(scene):
            rows.append(
                [
                    j
                    for j, b in enumerate(scene)
                    if j != i and (b.x - a.x) * dirs[name][0] + (b.y - a.y) * dirs[name][1] > eps
                ]
            )
        out[name] = rows
    return out


# --------------------------------------------------------------------------------------------------------------
# Edits
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """One attribute of one object changed: ``scene[index].<attribute>`` goes from ``old`` to ``new``."""

    index: int
    attribute: str
    old: str
    new: str


def edit_scene(scene: Scene, index: int, attribute: str, value: str) -> Scene:
    """Return a copy of ``scene`` with ``attribute`` of object ``index`` set to ``value`` (everything else kept)."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {ATTRIBUTES}")
    objs = list(scene)
    objs[index] = dataclasses.replace(objs[index], **{attribute: value})
    return tuple(objs)


def _placement_holds(scene: Scene, attribute: str, cfg: SceneConfig | None) -> bool:
    """Whether an edit of ``attribute`` that gave ``scene`` keeps the placement rules (without ``cfg``: always).
    Colour and material never move a boundary, so only shape and size changes are checked."""
    return cfg is None or attribute in ("color", "material") or scene_is_valid(scene, cfg)


def remove_value(
    scene: Scene,
    rng: np.random.Generator,
    attribute: str,
    value: str,
    cfg: SceneConfig | None = SCENE_PROFILES["cpu"],
    tries: int = 20,
) -> Scene:
    """The scene that a word naming ``value`` no longer describes: every object whose ``attribute`` is ``value``
    gets another value of it (drawn per object), nothing else changes. The negative of an isolated-word caption.

    With ``cfg`` given, draws are repeated (up to ``tries``) until the placement rules hold; if none does (a small
    object that can only grow into a neighbour) the last draw is returned, overlapping but still without the value.
    Raises ``ValueError`` if no object has the value."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {ATTRIBUTES}")
    holders = [i for i, o in enumerate(scene) if getattr(o, attribute) == value]
    if not holders:
        raise ValueError(f"no object of the scene has {attribute} {value!r}")
    others = [v for v in VALUES[attribute] if v != value]
    new = scene
    for _ in range(max(1, tries)):
        new = scene
        for i in holders:
            new = edit_scene(new, i, attribute, others[int(rng.integers(len(others)))])
        if _placement_holds(new, attribute, cfg):
            break
    return new


class NoValidEdit(ValueError):
    """:func:`random_edit` found no change of the allowed attributes that keeps the scene's placement rules."""


def random_edit(
    scene: Scene,
    rng: np.random.Generator,
    cfg: SceneConfig | None = SCENE_PROFILES["cpu"],
    attributes: Sequence[str] = ATTRIBUTES,
    balance: str = "value",
    weights: Sequence[float] | None = None,
    value_weights: Mapping[str, float] | None = None,
) -> tuple[Scene, Edit]:
    """Change exactly one attribute of one object to a different value.

    ``balance="value"``: uniformly among the valid (object, attribute, new value) edits, so an attribute is chosen
    in proportion to its number of other values (colour 7, shape 2, material and size 1: 64% of edits change a
    colour). ``balance="attribute"``: the attribute first, uniformly among those with a valid edit, then uniformly
    among its valid edits (each attribute changed equally often). ``weights`` (one positive number per entry of
    ``attributes``, ``balance="attribute"`` only) draws the attribute in proportion to its weight instead; an
    attribute with no valid edit passes its turn to the next one drawn.

    ``value_weights`` (value -> positive weight; unlisted values weigh 1) draws, among the candidate edits (those of
    the chosen attribute, or every change with ``balance="value"``), an edit in proportion to the weight of the
    value it changes (``{"cube": 2}``: a cube becomes another shape twice as often as a sphere or a cylinder
    does). Without it the draw is uniform, as before it existed.

    With ``cfg`` given, edits that break the placement rules (a small object grown large into a neighbour, or
    a shape change that hides another object) are skipped. Raises :class:`NoValidEdit` if no edit is valid.
    """
    if balance not in ("value", "attribute"):
        raise ValueError(f"balance must be 'value' or 'attribute', got {balance!r}")

    def candidates(attrs_: Sequence[str]) -> list[Edit]:
        return [Edit(i, a, getattr(o, a), v) for i, o in enumerate(scene) for a in attrs_ for v in VALUES[a]
                if v != getattr(o, a)]

    def first_valid(cands: list[Edit]) -> tuple[Scene, Edit] | None:
        if not value_weights or not cands:
            order = rng.permutation(len(cands))  # the draw of every seed before value_weights existed
        else:
            w = np.asarray([value_weights.get(e.old, 1.0) for e in cands], float)
            order = rng.choice(len(cands), size=len(cands), replace=False, p=w / w.sum())
        for k in order:
            e = cands[int(k)]
            new = edit_scene(scene, e.index, e.attribute, e.new)
            if _placement_holds(new, e.attribute, cfg):
                return new, e
        return None

    if weights is not None and (balance != "attribute" or len(weights) != len(attributes) or min(weights) <= 0):
        raise ValueError(f"weights must be one positive number per attribute, with balance='attribute'; got "
                         f"{list(weights)} for {list(attributes)}, balance={balance!r}")
    if value_weights is not None and not all(math.isfinite(w) and w > 0 for w in value_weights.values()):
        raise ValueError(f"value_weights must be positive numbers; got {dict(value_weights)}")
    if balance == "value":
        groups = [list(attributes)]
    else:
        # without weights the order is rng.permutation, as before weights existed: same seed, same edits
        order = rng.permutation(len(attributes)) if weights is None else rng.choice(
            len(attributes), size=len(attributes), replace=False, p=np.asarray(weights, float) / sum(weights))
        groups = [[attributes[int(k)]] for k in order]
    for group in groups:
        found = first_valid(candidates(group))
        if found is not None:
            return found
    raise NoValidEdit("no valid single-attribute edit for this scene")


# --------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------


@dataclass
class RenderOutput:
    """Rendered batch.

    * ``images``: ``(B, 3, H, W)`` float32 RGB in [0, 1].
    * ``instances``: ``(B, H, W)`` int64; 0 = ground, ``k + 1`` = object ``k`` of the scene.
    * ``attributes``: ``(B, 4, H, W)`` int64; channel order ``ATTRIBUTES`` (shape, color, material, size);
      0 = background, ``i + 1`` = ``VALUES[attribute][i]``.
    """

    images: torch.Tensor
    instances: torch.Tensor
    attributes: torch.Tensor


@dataclass(frozen=True)
class Shading:
    """Material and light constants (display space, no gamma)."""

    light: tuple[float, float, float] = DEFAULT_LIGHT
    ground: float = 0.62
    ground_ambient: float = 0.55
    ground_diffuse: float = 0.45
    shadow: float = 0.45  # fraction of the ground's direct light that remains in shadow
    rubber_ambient: float = 0.42
    rubber_diffuse: float = 0.62
    rubber_specular: float = 0.06
    rubber_shininess: float = 6.0
    metal_ambient: float = 0.05
    metal_diffuse: float = 0.25
    metal_reflect: float = 0.9
    metal_sheen: float = 0.3
    metal_specular: float = 1.0
    metal_shininess: float = 70.0


DEFAULT_SHADING = Shading()

_EPS = 1e-4
_INF = float("inf")


class _Geometry:
    """Per-object tensors of a batch, flattened: N objects over B scenes with up to K objects each."""

    def __init__(self, scenes: Sequence[Scene], device: torch.device):
        self.B = len(scenes)
        self.K = max(1, max((len(s) for s in scenes), default=1))
        rows = []
        for b, s in enumerate(scenes):
            for k, o in enumerate(s):
                rows.append(
                    (
                        b * self.K + k,
                        SHAPES.index(o.shape),
                        COLORS.index(o.color),
                        MATERIALS.index(o.material),
                        SIZES.index(o.size),
                        o.x,
                        o.y,
                        o.radius,
                        math.radians(o.rotation),
                    )
                )
        arr = np.array(rows, dtype=np.float64).reshape(-1, 9)
        self.np = arr
        self.n = arr.shape[0]
        self.slot = torch.as_tensor(arr[:, 0], dtype=torch.long, device=device)  # b * K + k
        self.cls = torch.as_tensor(arr[:, 1:5], dtype=torch.long, device=device)  # (N, 4) 0-based classes
        self.cx = torch.as_tensor(arr[:, 5], dtype=torch.float32, device=device)
        self.cy = torch.as_tensor(arr[:, 6], dtype=torch.float32, device=device)
        self.r = torch.as_tensor(arr[:, 7], dtype=torch.float32, device=device)
        th = torch.as_tensor(arr[:, 8], dtype=torch.float32, device=device)
        self.cos, self.sin = torch.cos(th), torch.sin(th)
        rgb = torch.tensor([COLOR_RGB[c] for c in COLORS], dtype=torch.float32, device=device) / 255.0
        self.albedo = rgb[self.cls[:, 1]]  # (N, 3)
        self.metal = self.cls[:, 2] == MATERIALS.index("metal")
        # slot -> object index (or -1)
        self.obj_of_slot = torch.full((self.B * self.K,), -1, dtype=torch.long, device=device)
        self.obj_of_slot[self.slot] = torch.arange(self.n, device=device)


# Side lengths of the square screen-space culling windows (objects are grouped by the smallest that fits).
_WINDOW_SIZES = tuple(
    sorted({int(b * m) for b in (4, 8, 16, 32, 64, 128, 256) for m in (1, 1.25, 1.5, 1.75)})
)


def _windows(
    geo: _Geometry, camera: Camera, R: int, light: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Square screen windows (in pixels of an R x R image) that contain each object, or its shadow.

    Returns ``(corner, size)``: ``corner`` ``(N, 2)`` top-left (row, col), ``size`` ``(N,)`` side, clipped to the image.
    """
    arr = geo.np
    x, y, r, th = arr[:, 5], arr[:, 6], arr[:, 7], arr[:, 8]
    # a box that holds the object: half-side r (rotated with cubes, whose vertices these then are), z in [0, 2r]
    th = np.where(arr[:, 1] == SHAPES.index("cube"), th, 0.0)
    sx = np.array([-1, 1, 1, -1] * 2, dtype=np.float64)
    sy = np.array([-1, -1, 1, 1] * 2, dtype=np.float64)
    sz = np.array([0] * 4 + [2] * 4, dtype=np.float64)
    cs, sn = np.cos(th)[:, None], np.sin(th)[:, None]
    px = x[:, None] + r[:, None] * (cs * sx - sn * sy)
    py = y[:, None] + r[:, None] * (sn * sx + cs * sy)
    pz = r[:, None] * sz
    pts = np.stack([px, py, pz], -1)  # (N, 8, 3); projection of the hull = hull of the projected vertices
    if light is not None:
        # the shadow lies within the box's shadow on the ground
        pts = np.concatenate([pts, pts - (pts[..., 2:3] / light[2]) * light], 1)
    uv, _ = camera.project(pts.reshape(-1, 3))
    uv = uv.reshape(len(x), -1, 2) * R
    lo = np.floor(uv.min(1)) - 1
    hi = np.ceil(uv.max(1)) + 1
    side = np.clip((hi - lo).max(-1), 1, R)
    size = np.array([next((w for w in _WINDOW_SIZES if w >= s), R) for s in side])
    size = np.minimum(size, R)
    centre = (lo + hi) / 2
    corner = np.clip(np.round(centre - size[:, None] / 2), 0, (R - size)[:, None]).astype(np.int64)
    return corner[:, ::-1].copy(), size  # (row, col)


def _intersect(geo: _Geometry, idx: torch.Tensor, shape: str, o, d) -> torch.Tensor:
    """Ray parameters of the first hit of rays ``o + t d`` with objects ``idx`` (all of one shape).

    ``o`` and ``d`` are triples (x, y, z) of tensors (or floats) that broadcast to ``(n, S, S)``; ``d`` need not
    be unit length. Returns ``(n, S, S)``, inf on a miss.
    """
    cx, cy, r = geo.cx[idx, None, None], geo.cy[idx, None, None], geo.r[idx, None, None]
    ox, oy, oz = o
    dx, dy, dz = d
    lx, ly = ox - cx, oy - cy  # origin relative to the object's axis
    inf = torch.full((), _INF, device=cx.device)
    if shape == "sphere":
        lz = oz - r
        a = dx * dx + dy * dy + dz * dz
        b = lx * dx + ly * dy + lz * dz
        c = lx * lx + ly * ly + lz * lz - r * r
        disc = b * b - a * c
        t = (-b - torch.sqrt(disc.clamp_min(0))) / a
        return torch.where((disc > 0) & (t > _EPS), t, inf)
    if shape == "cylinder":
        h = 2 * r
        a = dx * dx + dy * dy
        a = a.clamp_min(1e-12) if torch.is_tensor(a) else max(a, 1e-12)
        b = lx * dx + ly * dy
        c = lx * lx + ly * ly - r * r
        disc = b * b - a * c
        ts = (-b - torch.sqrt(disc.clamp_min(0))) / a
        zs = oz + ts * dz
        ts = torch.where((disc > 0) & (ts > _EPS) & (zs >= 0) & (zs <= h), ts, inf)
        # top cap (rays always point downwards or upwards here, never horizontally)
        tt = (h - oz) / dz
        px, py = lx + tt * dx, ly + tt * dy
        tt = torch.where((tt > _EPS) & (px * px + py * py <= r * r), tt, inf)
        return torch.minimum(ts, tt)
    if shape == "cube":
        cs, sn = geo.cos[idx, None, None], geo.sin[idx, None, None]
        loc_o = (cs * lx + sn * ly, -sn * lx + cs * ly, oz - r)
        loc_d = (cs * dx + sn * dy, -sn * dx + cs * dy, dz)
        tnear = tfar = None
        for lo_, ld_ in zip(loc_o, loc_d, strict=True):
            if torch.is_tensor(ld_):
                ld_ = torch.where(ld_.abs() < 1e-9, torch.full_like(ld_, 1e-9), ld_)
            inv = 1.0 / ld_
            t1 = (-r - lo_) * inv
            t2 = (r - lo_) * inv
            lo_t, hi_t = torch.minimum(t1, t2), torch.maximum(t1, t2)
            tnear = lo_t if tnear is None else torch.maximum(tnear, lo_t)
            tfar = hi_t if tfar is None else torch.minimum(tfar, hi_t)
        return torch.where((tnear <= tfar) & (tnear > _EPS), tnear, inf)
    raise ValueError(shape)


class _RayTables:
    """Separable ray tables of an R x R image (float32, on ``device``).

    The unnormalised primary ray through pixel (row i, col j) is ``d = row[i] + col[j]`` (the camera's right
    axis is horizontal), and it meets the ground at ``g = g0[i] + tg[i] * col[j]``.
    """

    def __init__(self, camera: Camera, R: int, device: torch.device):
        pos, fwd, right, up = camera.basis()
        half = math.tan(math.radians(camera.fov) / 2)
        u = ((np.arange(R) + 0.5) / R * 2 - 1) * half
        v = ((np.arange(R) + 0.5) / R * 2 - 1) * half
        row = fwd[None] - v[:, None] * up[None]  # (R, 3)
        col = u[:, None] * right[None]  # (R, 3), z = 0
        tg = -pos[2] / row[:, 2]  # (R,)
        if np.any(tg <= 0):
            raise ValueError("camera sees the horizon; lower the field of view or raise the elevation")
        f32 = dict(dtype=torch.float32, device=device)
        self.pos = tuple(float(c) for c in pos)
        self.row = torch.tensor(row, **f32)
        self.col = torch.tensor(col, **f32)
        self.tg = torch.tensor(tg, **f32)
        self.g0 = torch.tensor(pos[None] + tg[:, None] * row, **f32)
        d = (row[:, None, :] + col[None, :, :]).reshape(-1, 3)
        self.d = torch.tensor(d, **f32)  # (P, 3) unnormalised
        self.g = torch.tensor(pos[None] + np.repeat(tg, R)[:, None] * d, **f32)  # (P, 3) ground points


_TABLES: dict[tuple, _RayTables] = {}


def _tables(camera: Camera, R: int, device: torch.device) -> _RayTables:
    key = (camera, R, str(device))
    if key not in _TABLES:
        _TABLES[key] = _RayTables(camera, R, device)
    return _TABLES[key]


def _ray_hits(geo: _Geometry, tab: _RayTables, windows, R: int, light: tuple[float, float, float] | None):
    """Hits of primary rays (``light`` None) or of shadow rays from the ground towards ``light``, with every
    object, tested only inside each object's screen window.

    Returns ``(obj, flat, t)``: for every hit, the object index, the flat pixel index ``b * P + p`` in its
    scene's image, and the ray parameter (all ``(H,)``).
    """
    corner, size = windows
    P = R * R
    dev = tab.row.device
    shapes = geo.np[:, 1].astype(int)
    objs, flats, ts = [], [], []
    for s, name in enumerate(SHAPES):
        for w in np.unique(size[shapes == s]):
            sel = np.nonzero((shapes == s) & (size == w))[0]
            w = int(w)
            ar = np.arange(w)
            rows = torch.as_tensor(corner[sel, 0, None] + ar[None], device=dev)  # (n, S)
            cols = torch.as_tensor(corner[sel, 1, None] + ar[None], device=dev)
            cvec = tab.col[cols]  # (n, S, 3)
            if light is None:
                rvec = tab.row[rows]
                o = tab.pos
                d = tuple(rvec[:, :, None, i] + cvec[:, None, :, i] for i in range(3))
            else:
                g0, tg = tab.g0[rows], tab.tg[rows][:, :, None]
                o = tuple(g0[:, :, None, i] + tg * cvec[:, None, :, i] for i in range(3))
                d = light
            idx = torch.as_tensor(sel, device=dev)
            t = _intersect(geo, idx, name, o, d)  # (n, S, S)
            ii, rr, cc = torch.nonzero(torch.isfinite(t), as_tuple=True)
            objs.append(idx[ii])
            flats.append((geo.slot[idx] // geo.K)[ii] * P + rows[ii, rr] * R + cols[ii, cc])
            ts.append(t[ii, rr, cc])
    return torch.cat(objs), torch.cat(flats), torch.cat(ts)


def _normals(geo: _Geometry, obj: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Unit normals ``(M, 3)`` at hit points ``p`` ``(M, 3)`` on objects ``obj`` ``(M,)``."""
    shape = geo.cls[obj, 0]
    cx, cy, r = geo.cx[obj], geo.cy[obj], geo.r[obj]
    lx, ly, lz = p[:, 0] - cx, p[:, 1] - cy, p[:, 2] - r
    zero = torch.zeros_like(lx)
    # sphere
    n_sph = torch.stack([lx, ly, lz], -1)
    # cylinder: top cap or side
    top = p[:, 2] >= 2 * r - 1e-3 * r
    n_cyl = torch.where(
        top[:, None], torch.stack([zero, zero, torch.ones_like(lx)], -1), torch.stack([lx, ly, zero], -1)
    )
    # cube: the local axis with the largest coordinate
    cs, sn = geo.cos[obj], geo.sin[obj]
    loc = torch.stack([cs * lx + sn * ly, -sn * lx + cs * ly, lz], -1)
    ax = loc.abs().argmax(-1, keepdim=True)
    n_loc = torch.zeros_like(loc).scatter_(-1, ax, torch.sign(loc.gather(-1, ax)))
    n_cube = torch.stack(
        [cs * n_loc[:, 0] - sn * n_loc[:, 1], sn * n_loc[:, 0] + cs * n_loc[:, 1], n_loc[:, 2]], -1
    )
    n = torch.where((shape == SHAPES.index("sphere"))[:, None], n_sph, n_cyl)
    n = torch.where((shape == SHAPES.index("cube"))[:, None], n_cube, n)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-9)


def render_scenes(
    scenes: Sequence[Scene],
    resolution: int = 64,
    supersample: int = 2,
    device: str | torch.device = "cpu",
    camera: Camera = DEFAULT_CAMERA,
    shading: Shading = DEFAULT_SHADING,
    chunk: int = 128,
) -> RenderOutput:
    """Render a batch of scenes.

    Args:
        scenes: B scenes (tuples of :class:`SceneObject`).
        resolution: image side H = W (64 by default; 128 works too).
        supersample: rays per pixel side; images are box-filtered, labels take the majority over sub-pixels.
        device: where to render (``"cpu"`` or ``"cuda"``).
        chunk: scenes per vectorised chunk (bounds memory).

    Returns:
        :class:`RenderOutput` with ``images`` ``(B, 3, H, W)`` in [0, 1], ``instances`` ``(B, H, W)`` and
        ``attributes`` ``(B, 4, H, W)``.
    """
    device = torch.device(device)
    outs = [
        _render_chunk(scenes[i : i + chunk], resolution, supersample, device, camera, shading)
        for i in range(0, len(scenes), chunk)
    ]
    if not outs:
        h = resolution
        return RenderOutput(
            torch.zeros(0, 3, h, h, device=device),
            torch.zeros(0, h, h, dtype=torch.long, device=device),
            torch.zeros(0, 4, h, h, dtype=torch.long, device=device),
        )
    return RenderOutput(
        *(torch.cat([getattr(o, f) for o in outs]) for f in ("images", "instances", "attributes"))
    )


@torch.no_grad()
def _render_chunk(
    scenes: Sequence[Scene], res: int, ss: int, device: torch.device, camera: Camera, sh: Shading
) -> RenderOutput:
    R = res * ss
    P = R * R
    tab = _tables(camera, R, device)
    geo = _Geometry(scenes, device)
    B, K = geo.B, geo.K
    light = np.asarray(sh.light, dtype=np.float64)
    light = light / np.linalg.norm(light)
    L = torch.as_tensor(light, dtype=torch.float32, device=device)

    # ground: direct light unless a shadow ray towards the light hits an object of the same scene
    lit = torch.ones(B * P, device=device)
    if geo.n:
        _, flat_s, _ = _ray_hits(geo, tab, _windows(geo, camera, R, light), R, tuple(float(c) for c in light))
        lit[flat_s] = sh.shadow
    falloff = 1.0 - 0.05 * (tab.g[:, :2].norm(dim=-1) / 4.0)  # slight vignetting across the floor
    ground = (
        sh.ground * (sh.ground_ambient + sh.ground_diffuse * float(L[2]) * lit.view(B, P)) * falloff[None]
    )
    img = ground[:, None, :].repeat(1, 3, 1)  # (B, 3, P)
    inst = torch.zeros(B * P, dtype=torch.long, device=device)

    if geo.n:
        # nearest hit per pixel: scatter-min of t, then keep the hits that equal the minimum
        hobj, hflat, ht = _ray_hits(geo, tab, _windows(geo, camera, R, None), R, None)
        tmin = torch.full((B * P,), _INF, device=device).scatter_reduce_(0, hflat, ht, "amin")
        win = ht == tmin[hflat]
        obj_of_pix = torch.full((B * P,), -1, dtype=torch.long, device=device)
        obj_of_pix[hflat[win]] = hobj[win]
        flat = torch.nonzero(obj_of_pix >= 0).flatten()
        obj = obj_of_pix[flat]  # (M,)
        bi, pi = flat // P, flat % P
        kk = geo.slot[obj] % K
        du = tab.d[pi]
        p = torch.tensor(tab.pos, device=device)[None] + tmin[flat][:, None] * du
        dm = du / du.norm(dim=-1, keepdim=True)
        n = _normals(geo, obj, p)
        v = -dm
        nl = (n @ L).clamp_min(0)
        hvec = L[None] + v
        hvec = hvec / hvec.norm(dim=-1, keepdim=True)
        nh = (n * hvec).sum(-1).clamp_min(0)
        refl = dm - 2 * (dm * n).sum(-1, keepdim=True) * n
        # a soft studio environment: bright above, the grey floor below
        env = torch.clamp((refl[:, 2] + 0.15) / 0.8, 0, 1)
        alb = geo.albedo[obj]
        metal = geo.metal[obj]
        # metal mirrors the dark floor near its base and the bright studio above: a vertical gradient that makes
        # even flat cube faces look metallic; the studio's white light shows on upward-facing parts, and the key
        # light leaves a sharp highlight
        height = (p[:, 2] / (2 * geo.r[obj])).clamp(0, 1)
        env_c = (0.2 + 0.8 * env) * (0.3 + 0.7 * height)
        rubber_c = (
            alb * (sh.rubber_ambient + sh.rubber_diffuse * nl)[:, None]
            + (sh.rubber_specular * nh.pow(sh.rubber_shininess))[:, None]
        )
        metal_c = (
            alb * (sh.metal_ambient + sh.metal_diffuse * nl + sh.metal_reflect * env_c)[:, None]
            + (sh.metal_specular * nh.pow(sh.metal_shininess) + sh.metal_sheen * env.pow(3) * height)[:, None]
        )
        col = torch.where(metal[:, None], metal_c, rubber_c).clamp(0, 1)
        img[bi, :, pi] = col
        inst[flat] = kk + 1

    img = img.view(B, 3, R, R)
    if ss > 1:  # box filter: the mean of the ss x ss sub-pixels (strided sums beat avg_pool2d on the CPU)
        acc = img[:, :, 0::ss, 0::ss].clone()
        for i in range(ss):
            for j in range(ss):
                if i or j:
                    acc += img[:, :, i::ss, j::ss]
        img = acc / (ss * ss)
    inst = inst.view(B, P)
    if ss > 1:
        # majority instance over the ss x ss sub-pixels (ties go to the lower id, i.e. the ground)
        sub = torch.arange(P, device=device)
        lo_pix = (sub // R // ss) * res + (sub % R) // ss  # (P,) low-resolution pixel of every sub-pixel
        key = (
            (torch.arange(B, device=device)[:, None] * (res * res) + lo_pix[None]) * (K + 1) + inst
        ).flatten()
        votes = torch.bincount(key, minlength=B * res * res * (K + 1)).view(B, res * res, K + 1)
        inst = votes.argmax(-1)  # (B, res * res)
    # attributes of each pixel's instance, looked up in a per-scene table (row 0 = background)
    table = torch.zeros(B * (K + 1), 4, dtype=torch.long, device=device)
    if geo.n:
        table[(geo.slot // K) * (K + 1) + geo.slot % K + 1] = geo.cls + 1
    attrs = table[torch.arange(B, device=device)[:, None] * (K + 1) + inst]  # (B, res * res, 4)
    return RenderOutput(
        img.contiguous(), inst.view(B, res, res), attrs.permute(0, 2, 1).reshape(B, 4, res, res).contiguous()
    )


def render_scene(scene: Scene, **kwargs) -> RenderOutput:
    """Render one scene; outputs keep a leading batch dimension of 1."""
    return render_scenes([scene], **kwargs)


def render_edit(
    scene: Scene,
    rng: np.random.Generator,
    cfg: SceneConfig | None = SCENE_PROFILES["cpu"],
    **render_kwargs,
) -> tuple[RenderOutput, RenderOutput, Scene, Edit]:
    """Render ``scene`` and a copy with exactly one attribute of one object changed (see :func:`random_edit`).

    Returns ``(original, edited, edited_scene, edit)``; both renders have batch size 1.
    """
    new, e = random_edit(scene, rng, cfg)
    both = render_scenes([scene, new], **render_kwargs)
    one = [
        RenderOutput(both.images[i : i + 1], both.instances[i : i + 1], both.attributes[i : i + 1])
        for i in (0, 1)
    ]
    return one[0], one[1], new, e


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` floats in [0, 1] -> ``(B, H, W, 3)`` uint8 (for PNGs)."""
    return (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def make_dataset(
    seed: int,
    n: int,
    cfg: SceneConfig = SCENE_PROFILES["cpu"],
    resolution: int = 64,
    device: str | torch.device = "cpu",
    supersample: int = 2,
) -> tuple[list[Scene], RenderOutput]:
    """``n`` scenes drawn from ``np.random.default_rng(seed)`` and their renders."""
    scenes = sample_scenes(np.random.default_rng(seed), n, cfg)
    return scenes, render_scenes(scenes, resolution=resolution, supersample=supersample, device=device)


__all__ = [
    "Camera",
    "DEFAULT_CAMERA",
    "DEFAULT_SHADING",
    "Edit",
    "RenderOutput",
    "SCENE_PROFILES",
    "Scene",
    "SceneConfig",
    "SceneObject",
    "Shading",
    "edit_scene",
    "NoValidEdit",
    "make_dataset",
    "occlusion_fractions",
    "random_edit",
    "relations",
    "render_edit",
    "render_scene",
    "render_scenes",
    "sample_scene",
    "sample_scenes",
    "scene_from_dicts",
    "scene_is_valid",
    "scene_to_dicts",
    "to_uint8",
]
