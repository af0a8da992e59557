"""Attribute segmenter: a small U-Net trained on rendered scenes, and segmentation -> list of objects.

The network predicts, per pixel, foreground vs ground and the four CLEVR attributes (shape 3, colour 8,
material 2, size 2 classes, in :mod:`audio_clevrgan.vocab` order). It is trained with the renderer's ground
truth (foreground cross-entropy on every pixel, attribute cross-entropies on object pixels) on freshly drawn
scenes, with mild noise/blur so that it also reads GAN samples.

:func:`segment_objects` turns predictions into objects: connected components of the predicted foreground (split
where a component holds two large regions of different colour or shape, e.g. touching objects), each with its
four attributes (argmax of the mean class probability over its pixels), their confidence (that mean
probability), centroid and pixel count. :func:`image_relations` derives CLEVR's left/right/front/behind from
centroids, for captions of GAN images.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from .render import SceneConfig, render_scenes, sample_scenes
from .vocab import ATTRIBUTES, NUM_VALUES, RELATIONS, VALUES

#: Output heads and their number of classes: foreground (ground / object) and the four attributes.
HEADS: dict[str, int] = {"foreground": 2, **NUM_VALUES}


@dataclass(frozen=True)
class SegmenterConfig:
    widths: tuple[int, ...] = (32, 64, 128, 192)  # at full, 1/2, 1/4, 1/8 resolution
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    min_objects: int = 1
    max_objects: int = 5  # train on up to 5 objects (more occlusion than the GAN's scenes) for robustness
    noise: float = 0.03  # max std of added Gaussian noise (images in [0, 1])
    blur_prob: float = 0.3  # probability of a small Gaussian blur
    resolution: int = 64
    #: "unet" (the committed segmenter), "dilated" (the independent evaluator: no U-Net skips, dilated context at
    #: 1/4 resolution) or "encoder" (the frozen feature network of the projected GAN discriminator)
    arch: str = "unet"

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> SegmenterConfig:
        return SegmenterConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


ARCHITECTURES = ("unet", "dilated", "encoder")

SEGMENTER_PROFILES = {
    "tiny": SegmenterConfig(widths=(8, 16, 16, 16), batch_size=4),
    "cpu": SegmenterConfig(widths=(24, 48, 96, 160), batch_size=24),
    "gpu": SegmenterConfig(),
    # the independent evaluator of GAN quality: another architecture (and, by its command, another seed)
    "evaluator": SegmenterConfig(widths=(24, 48, 96), batch_size=24, arch="dilated"),
    "evaluator-tiny": SegmenterConfig(widths=(8, 8, 16), batch_size=4, arch="dilated"),
    # the frozen feature network of the projected discriminator (cheap: about 30 MMAC per 64x64 image)
    "features": SegmenterConfig(widths=(32, 64, 128), batch_size=32, arch="encoder", max_objects=3),
    "features-tiny": SegmenterConfig(widths=(8, 8, 16), batch_size=4, arch="encoder", max_objects=3),
}


def _conv_bn(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(True),
    )


class _Reader(nn.Module):
    """What every attribute reader shares: ``predict`` (softmax per head, batched, no gradient)."""

    config: SegmenterConfig

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 128) -> dict[str, torch.Tensor]:
        """Class probabilities per head, ``(B, C_head, H, W)`` (softmax), for images ``(B, 3, H, W)`` in [0, 1]."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        outs: dict[str, list] = {k: [] for k in HEADS}
        for i in range(0, images.shape[0], batch_size):
            logits = self(images[i : i + batch_size].to(dev).float())
            for k, v in logits.items():
                outs[k].append(v.softmax(1))
        self.train(was)
        return {k: torch.cat(v) for k, v in outs.items()}


def _split_heads(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    return dict(zip(HEADS, logits.split(list(HEADS.values()), 1), strict=True))


class AttributeSegmenter(_Reader):
    """U-Net: images ``(B, 3, H, W)`` in [0, 1] -> dict of logits ``(B, C_head, H, W)`` for each of ``HEADS``."""

    def __init__(self, config: SegmenterConfig = SEGMENTER_PROFILES["cpu"]):
        super().__init__()
        self.config = config
        w = config.widths
        self.enc = nn.ModuleList()
        cin = 3
        for i, c in enumerate(w):
            self.enc.append(
                nn.Sequential(_conv_bn(cin, c), _conv_bn(c, c, dilation=2 if i == len(w) - 1 else 1))
            )
            cin = c
        # context at the coarsest level: a dilated conv sees the whole 64x64 scene (for large vs small)
        self.context = nn.Sequential(_conv_bn(w[-1], w[-1], dilation=2), _conv_bn(w[-1], w[-1], dilation=4))
        self.dec = nn.ModuleList()
        for i in range(len(w) - 1, 0, -1):
            self.dec.append(nn.Sequential(_conv_bn(w[i] + w[i - 1], w[i - 1]), _conv_bn(w[i - 1], w[i - 1])))
        self.head = nn.Conv2d(w[0], sum(HEADS.values()), 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - 0.5) / 0.25
        skips = []
        for i, block in enumerate(self.enc):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = self.context(x) + x
        for j, block in enumerate(self.dec):
            skip = skips[-2 - j]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return _split_heads(self.head(x))


class DilatedReader(_Reader):
    """The independent evaluator's architecture: no U-Net skips between encoder and decoder levels.

    A stem at full resolution, two stride-2 stages to 1/4 resolution, four residual dilated convolutions there
    (dilation 1, 2, 4, 8: the whole 64x64 scene in view, for large vs small), then bilinear upsampling to full
    resolution with only the stem's features fused back in. ``(B, 3, H, W)`` in [0, 1] -> logits per head
    ``(B, C_head, H, W)``. ``widths``: stem, 1/2 and 1/4 resolution.
    """

    def __init__(self, config: SegmenterConfig = SEGMENTER_PROFILES["evaluator"]):
        super().__init__()
        self.config = config
        w0, w1, w2 = config.widths
        self.stem = _conv_bn(3, w0)
        self.down1 = nn.Sequential(_conv_bn(w0, w1), _conv_bn(w1, w1))
        self.down2 = _conv_bn(w1, w2)
        self.context = nn.ModuleList(_conv_bn(w2, w2, dilation=d) for d in (1, 2, 4, 8))
        self.fuse = nn.Sequential(nn.Conv2d(w2 + w0, w0 * 2, 1, bias=False), nn.BatchNorm2d(w0 * 2), nn.ReLU(True))
        self.head = nn.Conv2d(w0 * 2, sum(HEADS.values()), 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - 0.5) / 0.25
        s = self.stem(x)
        y = self.down2(F.max_pool2d(self.down1(F.max_pool2d(s, 2)), 2))
        for block in self.context:
            y = y + block(y)
        y = F.interpolate(y, size=s.shape[-2:], mode="bilinear", align_corners=False)
        return _split_heads(self.head(self.fuse(torch.cat([y, s], 1))))


class FeatureEncoder(_Reader):
    """The frozen feature network of the projected discriminator, trained like a reader on rendered ground truth.

    Three stride-2 stages (two 3x3 convolutions each) give feature maps at 1/2, 1/4 and 1/8 resolution
    (``features``: ``[(B, w0, R/2, R/2), (B, w1, R/4, R/4), (B, w2, R/8, R/8)]``); the training head reads the 1/4
    map and the upsampled 1/8 map and is upsampled to full resolution (``forward``: logits per head
    ``(B, C_head, R, R)``), so that the features it was trained through encode shape, colour, material and size.
    """

    def __init__(self, config: SegmenterConfig = SEGMENTER_PROFILES["features"]):
        super().__init__()
        self.config = config
        w = config.widths
        self.stages = nn.ModuleList()
        cin = 3
        for c in w:
            self.stages.append(nn.Sequential(_conv_bn_s2(cin, c), _conv_bn(c, c)))
            cin = c
        self.head = nn.Conv2d(w[-2] + w[-1], sum(HEADS.values()), 1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images ``(B, 3, R, R)`` in [0, 1] (gradients flow) -> the three feature maps (see the class docstring)."""
        x = (x - 0.5) / 0.25
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        top = F.interpolate(f[-1], size=f[-2].shape[-2:], mode="bilinear", align_corners=False)
        logits = self.head(torch.cat([f[-2], top], 1))
        return _split_heads(F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False))


def _conv_bn_s2(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


_READER_CLASSES = {"unet": AttributeSegmenter, "dilated": DilatedReader, "encoder": FeatureEncoder}


def reader_for(config: SegmenterConfig) -> _Reader:
    """A fresh reader of ``config.arch``."""
    return _READER_CLASSES[config.arch](config)


# --------------------------------------------------------------------------------------------------------------
# Objects from a segmentation
# --------------------------------------------------------------------------------------------------------------


@dataclass
class DetectedObject:
    """One object found in a segmentation.

    ``shape``/``color``/``material``/``size`` are vocabulary words; ``confidence[attr]`` is the mean probability
    of that value over the object's pixels and ``probs[attr]`` the full mean distribution; ``centroid`` is
    ``(x, y)`` = (column, row) in pixels; ``bottom`` the mean row of its lowest pixels (its ground contact).
    """

    shape: str
    color: str
    material: str
    size: str
    confidence: dict[str, float]
    probs: dict[str, tuple[float, ...]]
    centroid: tuple[float, float]
    bottom: float
    pixel_count: int
    foreground: float  # mean foreground probability

    @property
    def min_confidence(self) -> float:
        return min(self.confidence.values())

    @property
    def attributes(self) -> dict[str, str]:
        return {a: getattr(self, a) for a in ATTRIBUTES}

    def to_dict(self) -> dict:
        return asdict(self)


def _split_component(keys: np.ndarray, coords: np.ndarray, min_part: int) -> np.ndarray:
    """Split one component's pixels between its large (colour, shape) regions: label of each pixel, ``(n,)``."""
    vals, counts = np.unique(keys, return_counts=True)
    major = vals[counts >= min_part]
    if len(major) <= 1:
        return np.zeros(len(keys), dtype=np.int64)
    seeds = [coords[keys == v] for v in major]
    # every pixel goes to the major region with the nearest seed pixel
    d = np.stack([np.min(((coords[:, None, :] - s[None]) ** 2).sum(-1), 1) for s in seeds], 1)
    return d.argmin(1)


def segment_objects(
    pred: dict[str, torch.Tensor],
    fg_threshold: float = 0.5,
    min_pixels: int = 6,
    split_fraction: float = 0.25,
) -> list[list[DetectedObject]]:
    """Objects of every image of a batch of predictions (``AttributeSegmenter.predict`` output).

    Args:
        pred: per head, probabilities ``(B, C, H, W)``.
        fg_threshold: pixels with P(foreground) above this are object pixels.
        min_pixels: components smaller than this are ignored (at 64x64; scaled with the image area).
        split_fraction: a component is split when two different (colour, shape) regions each cover at least this
            fraction of it (and ``min_pixels``).
    Returns:
        For each image, its objects sorted left to right.
    """
    fg = (pred["foreground"][:, 1] > fg_threshold).cpu().numpy()
    B, H, W = fg.shape
    min_px = max(1, int(round(min_pixels * H * W / 4096)))
    probs = {a: pred[a].float().cpu().numpy() for a in ("foreground", *ATTRIBUTES)}
    arg = {a: probs[a].argmax(1) for a in ATTRIBUTES}
    result = []
    for b in range(B):
        lab, n = ndimage.label(fg[b], structure=np.ones((3, 3)))
        objs = []
        for comp in range(1, n + 1):
            rr, cc = np.nonzero(lab == comp)
            if len(rr) < min_px:
                continue
            keys = arg["color"][b, rr, cc] * 3 + arg["shape"][b, rr, cc]
            part = _split_component(keys, np.stack([rr, cc], 1), max(min_px, int(split_fraction * len(rr))))
            for p in np.unique(part):
                r, c = rr[part == p], cc[part == p]
                if len(r) < min_px:
                    continue
                conf, pr, words = {}, {}, {}
                for a in ATTRIBUTES:
                    mean = probs[a][b][:, r, c].mean(1)
                    k = int(mean.argmax())
                    words[a] = VALUES[a][k]
                    conf[a] = float(mean[k])
                    pr[a] = tuple(float(v) for v in mean)
                low = r >= np.percentile(r, 85)
                objs.append(
                    DetectedObject(
                        **words,
                        confidence=conf,
                        probs=pr,
                        centroid=(float(c.mean()), float(r.mean())),
                        bottom=float(r[low].mean()),
                        pixel_count=int(len(r)),
                        foreground=float(probs["foreground"][b, 1, r, c].mean()),
                    )
                )
        objs.sort(key=lambda o: o.centroid[0])
        result.append(objs)
    return result


def image_relations(objects: list[DetectedObject], eps: float = 2.5) -> dict[str, list[list[int]]]:
    """CLEVR-style relations from image positions: ``rel[name][i]`` lists every j that is ``name`` of object i.

    Left/right compare centroid columns, front/behind compare ground contacts (``bottom`` rows; lower in the
    image = in front), each with a margin of ``eps`` pixels (2.5 px at 64x64 is about CLEVR's 0.2 world units
    at the centre of the view). Image positions approximate the world rule of
    :func:`audio_clevrgan.render.relations`; perspective can flip pairs that are far apart in depth.
    """
    out: dict[str, list[list[int]]] = {name: [] for name in RELATIONS}
    for a in objects:
        out["left"].append([j for j, o in enumerate(objects) if a.centroid[0] - o.centroid[0] > eps])
        out["right"].append([j for j, o in enumerate(objects) if o.centroid[0] - a.centroid[0] > eps])
        out["front"].append([j for j, o in enumerate(objects) if o.bottom - a.bottom > eps])
        out["behind"].append([j for j, o in enumerate(objects) if a.bottom - o.bottom > eps])
    return out


# --------------------------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------------------------


def _augment(x: torch.Tensor, cfg: SegmenterConfig, g: torch.Generator) -> torch.Tensor:
    """Mild photometric noise: Gaussian noise, sometimes a small blur, +-4% brightness. ``(B, 3, H, W)``."""
    B = x.shape[0]
    dev = x.device
    sigma = torch.rand(B, 1, 1, 1, generator=g).to(dev) * cfg.noise
    x = x + sigma * torch.randn(x.shape, generator=g).to(dev)
    blur = (torch.rand(B, generator=g) < cfg.blur_prob).to(dev)
    if blur.any():
        k = torch.tensor([0.25, 0.5, 0.25], device=dev)
        kern = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
        xb = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kern, groups=3)
        x = torch.where(blur[:, None, None, None], xb, x)
    x = x * (1 + 0.08 * (torch.rand(B, 1, 1, 1, generator=g).to(dev) - 0.5))
    return x.clamp(0, 1)


def segmentation_loss(logits: dict[str, torch.Tensor], attrs: torch.Tensor) -> torch.Tensor:
    """Foreground CE on all pixels + attribute CEs on object pixels. ``attrs``: ``(B, 4, H, W)`` (0 = ground)."""
    fg = (attrs[:, 0] > 0).long()
    loss = F.cross_entropy(logits["foreground"], fg)
    m = fg.bool()
    if m.any():
        for c, a in enumerate(ATTRIBUTES):
            lg = logits[a].permute(0, 2, 3, 1)[m]  # (M, C)
            loss = loss + F.cross_entropy(lg, attrs[:, c][m] - 1)
    return loss


def _scene_cfg(cfg: SegmenterConfig) -> SceneConfig:
    return SceneConfig(min_objects=cfg.min_objects, max_objects=cfg.max_objects)


@torch.no_grad()
def evaluate_segmenter(
    model: AttributeSegmenter,
    seed: int = 10_000,
    n: int = 500,
    device: str | torch.device = "cpu",
    scene_config: SceneConfig | None = None,
) -> dict:
    """Accuracy on ``n`` held-out rendered scenes (drawn from ``seed``, never used in training).

    Returns per-pixel accuracy of each attribute on ground-truth object pixels (``pixel_acc``), their mean,
    foreground accuracy/IoU, and object-level figures: the fraction of true objects matched by a detected
    object with all four attributes right (``object_acc``).
    """
    scene_config = scene_config or SceneConfig()
    scenes = sample_scenes(np.random.default_rng(seed), n, scene_config)
    out = render_scenes(scenes, resolution=model.config.resolution, device=device)
    pred = model.predict(out.images)
    attrs = out.attributes
    fg = attrs[:, 0] > 0
    res: dict = {"n_scenes": n, "pixel_acc": {}}
    for c, a in enumerate(ATTRIBUTES):
        am = pred[a].argmax(1) + 1
        res["pixel_acc"][a] = float((am[fg] == attrs[:, c][fg]).float().mean())
    res["pixel_acc_mean"] = float(np.mean(list(res["pixel_acc"].values())))
    pfg = pred["foreground"][:, 1] > 0.5
    res["foreground_acc"] = float((pfg == fg).float().mean())
    res["foreground_iou"] = float((pfg & fg).sum() / (pfg | fg).sum())
    # objects: match each true object to the detected object nearest its mask centroid
    objs = segment_objects(pred)
    hit = total = n_det = 0
    for b, s in enumerate(scenes):
        n_det += len(objs[b])
        for k, o in enumerate(s):
            rr, cc = torch.nonzero(out.instances[b] == k + 1, as_tuple=True)
            if len(rr) == 0:
                continue
            total += 1
            cy, cx = float(rr.float().mean()), float(cc.float().mean())
            best = nearest_object(objs[b], cx, cy)
            if best is not None:
                hit += all(getattr(best, a) == getattr(o, a) for a in ATTRIBUTES)
    res["object_acc"] = hit / max(total, 1)
    res["n_objects"] = total
    res["n_detected"] = n_det
    return res


def nearest_object(objs: list[DetectedObject], cx: float, cy: float, radius: float = 4.0) -> DetectedObject | None:
    """The detected object whose centroid is nearest ``(cx, cy)`` (pixels), if closer than ``radius``."""
    best = min(objs, key=lambda d: (d.centroid[0] - cx) ** 2 + (d.centroid[1] - cy) ** 2, default=None)
    if best is None or math.hypot(best.centroid[0] - cx, best.centroid[1] - cy) >= radius:
        return None
    return best


def build_segmenter(config: SegmenterConfig, seed: int, device) -> _Reader:
    torch.manual_seed(seed)
    return reader_for(config).to(device)


def train_segmenter(
    out_dir: str | os.PathLike,
    steps: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
    resume: bool = True,
    profile: str = "cpu",
    config: SegmenterConfig | None = None,
    max_seconds: float | None = None,
    ckpt_every: int = 250,
    log_every: int = 50,
    threads: int | None = None,
    workers: int = 1,
    eval_scenes: int = 500,
    fit_seconds: float | None = None,
    verbose: bool = True,
) -> dict:
    """Train the segmenter on freshly rendered scenes (batch ``s`` from ``default_rng([seed, s])``), resumably.

    Writes ``out_dir/state.pt`` (model + optimiser + step), ``out_dir/segmenter.pt`` (weights for
    :func:`load_segmenter`, fp16) and ``out_dir/eval.json`` (held-out accuracy, see :func:`evaluate_segmenter`)
    at the end. The learning rate follows a cosine schedule over ``steps``. With ``fit_seconds``, the speed of
    the first 20 steps sets ``steps`` to what fits in that time (at most the given ``steps``; the choice is
    stored, so a resumed run keeps it). Returns the evaluation dict.
    """
    from .train_scripts import atomic_save  # local import: train_scripts imports this module lazily

    del workers  # scenes are drawn in the training process (cheap next to the network)
    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    state_path = out / "state.pt"
    ck = None
    if resume and state_path.exists():
        ck = torch.load(state_path, map_location=device, weights_only=True)
        config, seed = SegmenterConfig.from_dict(ck["config"]), ck["seed"]
    cfg = config or SEGMENTER_PROFILES[profile]
    model = build_segmenter(cfg, seed, device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        steps = ck.get("steps", steps)
    scfg = _scene_cfg(cfg)

    def save() -> None:
        atomic_save(
            {
                "kind": "audio_clevrgan.segmenter_state",
                "config": cfg.to_dict(),
                "seed": seed,
                "step": step,
                "model": model.state_dict(),
                "opt": opt.state_dict(),
            },
            state_path,
        )
        save_segmenter(
            model,
            out / "segmenter.pt",
            {"seed": seed, "step": step, "profile": profile, "device": str(device)},
        )

    t0 = time.time()
    model.train()
    with open(out / "log.jsonl", "a") as log:
        while step < steps:
            if max_seconds is not None and time.time() - t0 > max_seconds:
                break
            rng = np.random.default_rng([seed, step])
            g = torch.Generator().manual_seed(seed * 1_000_003 + step)
            scenes = sample_scenes(rng, cfg.batch_size, scfg)
            r = render_scenes(scenes, resolution=cfg.resolution, device=device)
            x = _augment(r.images, cfg, g)
            for pg in opt.param_groups:
                pg["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * min(step / max(steps, 1), 1.0)))
            loss = segmentation_loss(model(x), r.attributes)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if fit_seconds is not None and step == 20:
                steps = min(steps, int(20 / (time.time() - t0) * fit_seconds))
                if verbose:
                    print(f"[seg] {steps} steps fit in {fit_seconds:.0f}s", flush=True)
            if step % log_every == 0 or step == steps:
                rec = {"step": step, "loss": round(float(loss.detach()), 4), "t": round(time.time() - t0, 1)}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                if verbose:
                    print(f"[seg] {rec}", flush=True)
            if step % ckpt_every == 0:
                save()
    save()
    model.eval()
    res = evaluate_segmenter(model, n=eval_scenes, device=device)
    res.update(step=step, seconds=round(time.time() - t0, 1))
    (out / "eval.json").write_text(json.dumps(res, indent=1))
    if verbose:
        print(f"[seg] eval {json.dumps(res)}", flush=True)
    return res


def save_segmenter(model: AttributeSegmenter, path: str | os.PathLike, meta: dict | None = None) -> None:
    """Write the segmenter's weights (fp16) and config for :func:`load_segmenter`."""
    from .train_scripts import atomic_save

    sd = {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}
    atomic_save(
        {
            "kind": "audio_clevrgan.segmenter",
            "config": model.config.to_dict(),
            "state_dict": sd,
            "meta": meta or {},
        },
        path,
    )


def load_segmenter(path: str | os.PathLike, device: str | torch.device = "cpu") -> AttributeSegmenter:
    """Load a segmenter (``segmenter.pt`` or a training ``state.pt``) in eval mode, float32, gradients off."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    sd = ck["model"] if ck.get("kind") == "audio_clevrgan.segmenter_state" else ck["state_dict"]
    model = reader_for(SegmenterConfig.from_dict(ck["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    model.meta = ck.get("meta", {"step": ck.get("step")})
    return model.to(device).eval().requires_grad_(False)


__all__ = [
    "ARCHITECTURES",
    "AttributeSegmenter",
    "DetectedObject",
    "DilatedReader",
    "FeatureEncoder",
    "HEADS",
    "SEGMENTER_PROFILES",
    "SegmenterConfig",
    "evaluate_segmenter",
    "image_relations",
    "load_segmenter",
    "nearest_object",
    "reader_for",
    "save_segmenter",
    "segment_objects",
    "segmentation_loss",
    "train_segmenter",
]
