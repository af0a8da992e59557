"""Task-agnostic GAN editing: retain or replace one layer's output of any torch generator.

An edit follows GAN Dissection: ``h <- h * (1 - a) + v * a`` on the output ``h`` (Float[B, C, H, W]) of one named
layer, with ablation ``a`` in [0, 1] broadcastable to ``h`` and replacement ``v`` (0 when None); a steering edit
first adds a shift ``s`` (``h <- h + s``, e.g. the difference of two concepts' mean features on a region's cells). Any ``nn.Module``
works through forward hooks; a generator that also offers ``features(z, upto=layer)`` and ``decode(h, after=layer)``
(as the Audio CLEVRGAN generator does) runs only the layers after the edit for each retry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from negmine.errors import PluginError


class _Stop(Exception):
    """Raised by a retaining hook to skip the layers after the one we need."""


def match_shape(a: Tensor | float, like: Tensor) -> Tensor:
    """Broadcast an ablation/replacement to ``like`` (Float[B, C, H, W]): a C-vector applies everywhere, a (C, H, W)
    map to every item, and a map of another spatial size is adaptively max-pooled to the layer's H x W."""
    if not isinstance(a, Tensor):
        return torch.full_like(like, float(a))
    a = a.to(like.device, like.dtype)
    if a.dim() == 1:
        a = a.view(1, -1, 1, 1)
    elif a.dim() == 3:
        a = a.unsqueeze(0)
    if a.shape[-2:] != like.shape[-2:] and a.shape[-1] != 1:
        a = F.adaptive_max_pool2d(a, like.shape[-2:])
    return a.expand_as(like)


class GanEditor:
    """Edit one layer of a generator.

    gan: any module mapping latents Float[B, Z] to images Float[B, 3, R, R].
    layer: the name of the submodule whose output is edited (``dict(gan.named_modules())[layer]``).
    call: how to run the generator on latents (default ``gan(z)``).
    """

    def __init__(self, gan: nn.Module, layer: str, call: Callable[[nn.Module, Tensor], Tensor] | None = None) -> None:
        modules = dict(gan.named_modules())
        if layer not in modules:
            names = [n for n in modules if n]
            from negmine.errors import UnknownNameError

            raise UnknownNameError("GAN layer", layer, names)
        self.gan, self.layer, self.module = gan, layer, modules[layer]
        self.call = call or (lambda g, z: g(z))
        self.fast = callable(getattr(gan, "features", None)) and callable(getattr(gan, "decode", None))

    def _follow(self, z: Tensor) -> None:
        """Move the generator to the latents' device (once: a task loads its GAN on the CPU, training may run on a
        GPU)."""
        param = next(self.gan.parameters(), None)
        if param is not None and param.device != z.device:
            self.gan.to(z.device)

    @torch.no_grad()
    def features(self, z: Tensor) -> Tensor:
        """Float[B, C, H, W]: the layer's output for latents z (the rest of the generator is skipped)."""
        self._follow(z)
        if self.fast:
            return self.gan.features(z, upto=self.layer)
        store: dict[str, Tensor] = {}

        def hook(_module, _inputs, output):
            store["h"] = output
            raise _Stop

        handle = self.module.register_forward_hook(hook)
        try:
            self.call(self.gan, z)
        except _Stop:
            pass
        finally:
            handle.remove()
        if "h" not in store:
            raise PluginError(f"GAN layer {self.layer!r} was not called while generating")
        return store["h"]

    @torch.no_grad()
    def generate(self, z: Tensor, ablation: Tensor | float | None = None, replacement: Tensor | float | None = None,
                 features: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
        """Images Float[B, 3, R, R] with the layer's output edited: ``shift`` (broadcast as ``ablation``; None: 0)
        added first, then ablated and replaced; ``features`` (from :meth:`features`, unshifted) lets a generator with
        ``decode`` skip the layers before the edit."""
        def edit(h: Tensor) -> Tensor:
            if shift is not None:
                h = h + match_shape(shift, h)
            if ablation is None:
                return h
            a = match_shape(ablation, h)
            v = torch.zeros_like(h) if replacement is None else match_shape(replacement, h)
            return h * (1 - a) + v * a

        self._follow(z)
        if self.fast:
            h = features if features is not None else self.gan.features(z, upto=self.layer)
            return self.gan.decode(edit(h), after=self.layer)
        handle = self.module.register_forward_hook(lambda _m, _i, out: edit(out))
        try:
            return self.call(self.gan, z)
        finally:
            handle.remove()


@torch.no_grad()
def layer_grids(editor: GanEditor, z: Tensor) -> dict[str, tuple[int, int]]:
    """The spatial size (H, W) of every submodule of the generator whose output is a Float[B, C, H, W] map, for
    latents z (one full forward pass through forward hooks)."""
    grids: dict[str, tuple[int, int]] = {}
    handles = []
    for name, module in editor.gan.named_modules():
        if name:
            handles.append(module.register_forward_hook(
                lambda _m, _i, out, name=name: grids.__setitem__(name, tuple(out.shape[-2:]))
                if isinstance(out, Tensor) and out.dim() == 4 else None))
    try:
        editor._follow(z)
        editor.call(editor.gan, z)
    finally:
        for h in handles:
            h.remove()
    return grids


def check_layer_grid(editor: GanEditor, layer_grid: tuple[int, ...], image_grid: tuple[int, ...], z: Tensor,
                     who: str) -> None:
    """Refuse a GAN layer whose output is not on the model's image grid: the matchmap region and the concepts live
    on the model's grid, so on another grid an edit would ablate cells the model never looked at. The message
    names the layers that are on the grid."""
    if tuple(layer_grid) == tuple(image_grid):
        return
    grids = layer_grids(editor, z[:1])
    fitting = [n for n, _ in editor.gan.named_modules() if grids.get(n) == tuple(image_grid)]  # in module order
    raise PluginError(
        f"{who}: GAN layer {editor.layer!r} outputs a {layer_grid[0]}x{layer_grid[1]} map, but the model's image "
        f"map is {image_grid[0]}x{image_grid[1]}; edit a layer on the model's grid"
        + (f": {', '.join(repr(n) for n in fitting)}" if fitting else " (no layer of this GAN is)"))


def geodesic_region(heat: Tensor, seeds: Tensor, threshold: Tensor) -> Tensor:
    """Bool[B, H, W]: the 8-connected component of ``heat >= threshold * max`` that contains the seed, dilated once
    more with a 3x3 kernel (the paper code's region).

    heat: Float[B, H, W]; seeds: Long[B, 2] (row, col); threshold: Float[B] fraction of each map's maximum.
    """
    b, h, w = heat.shape
    peak = heat.flatten(1).amax(1)
    mask = heat >= (threshold * peak)[:, None, None]
    region = torch.zeros_like(mask)
    region[torch.arange(b), seeds[:, 0], seeds[:, 1]] = True
    kernel = torch.ones(1, 1, 3, 3, device=heat.device)
    for _ in range(h * w):  # grow inside the mask until stable (at most H*W steps)
        grown = (F.conv2d(region[:, None].float(), kernel, padding=1)[:, 0] > 0) & mask
        grown |= region
        if torch.equal(grown, region):
            break
        region = grown
    return F.conv2d(region[:, None].float(), kernel, padding=1)[:, 0] > 0


def upsample_mask(region: Tensor, size: int) -> Tensor:
    """Bool[B, h, w] -> Bool[B, size, size] (bilinear, rounded), the pixel footprint of an 8x8 region."""
    up = F.interpolate(region[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)
    return up[:, 0] >= 0.5


def change_ratio(original: Tensor, edited: Tensor, mask: Tensor, transform: Callable[[Tensor], Tensor]) -> Tensor:
    """Float[B]: ||(T(edited) - T(original)) * mask|| / ||T(original) * mask|| (mask Bool[B, H, W])."""
    t0, t1 = transform(original), transform(edited)
    m = mask[:, None].to(t0.dtype)
    num = ((t1 - t0) * m).flatten(1).norm(dim=1)
    den = (t0 * m).flatten(1).norm(dim=1).clamp_min(1e-8)
    return num / den


def imagenet_transform(images01: Tensor) -> Tensor:
    mean = torch.tensor((0.485, 0.456, 0.406), device=images01.device).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225), device=images01.device).view(1, 3, 1, 1)
    return (images01 - mean) / std


def resolve_gan(task: Any) -> nn.Module:
    """The task's GAN: ``task.resources["gan"]`` (a module) or ``["gan_loader"]`` (a zero-argument callable), put in
    eval mode without gradients (it is fixed while a model trains against its edits)."""
    res = getattr(task, "resources", {}) or {}
    if not isinstance(res.get("gan"), nn.Module) and callable(res.get("gan_loader")):
        res["gan"] = res["gan_loader"]()
    if isinstance(res.get("gan"), nn.Module):
        # a GAN in training mode draws with batch statistics (an edit then changes pixels far from its region, each
        # batch of edits differently) and moves its BatchNorm running statistics with every batch it draws
        return res["gan"].eval().requires_grad_(False)
    raise PluginError(f"task {getattr(task, 'name', '?')!r} declares 'gan' but resources has no 'gan' module or 'gan_loader'")


@torch.no_grad()
def edit_until_changed(
    editor: GanEditor,
    z: Tensor,
    features: Tensor,
    original: Tensor,
    pixels: Tensor,
    choose: Callable[[Tensor, int], tuple[Tensor, Tensor]],
    to_input: Callable[[Tensor], Tensor],
    accept: float,
    accept_step: float,
    max_tries: int,
    start: int = 0,
) -> dict[str, Tensor]:
    """The shared escalation loop of the edit generators, batched over the items not accepted yet.

    choose(pending Long[P], attempt) -> (units Bool[P, C], region Bool[P, h, w]) for this try, or (units, region,
    levels Float[P, C]): the value each edited unit is set to inside the region (0: ablated; above 0: inserted, GAN
    Dissection's ``v``), or (units, region, levels, shift Float[P, C]): a move added to every channel of the
    region's cells before the units are set (a steering edit; 0 for items not steered); ``attempt`` is the escalation level, starting at ``start`` (0: the paper's schedule; a warm
    start skips levels that rarely accept).
    An edit is accepted when its change ratio inside ``pixels`` (Bool[B, R, R]) reaches the threshold
    ``accept - attempt * accept_step``; the last level (``max_tries - 1``) accepts whatever it made, so the loop
    always ends.
    Returns edited images [B, 3, R, R] (GAN space), units Bool[B, C], levels Float[B, C] (the value each edited unit
    was set to; 0 where ablated or not edited), shift Float[B, C] (the move added on the region's cells; 0 where
    none), region Bool[B, h, w], tries Long[B] (tries made in this call),
    change_ratio Float[B], accepted Bool[B] (the change reached its threshold; False: taken at the last level
    whatever it changed).
    """
    start = max(0, min(int(start), max_tries - 1))
    b, c = features.shape[:2]
    edited = original.clone()
    units = torch.zeros(b, c, dtype=torch.bool)
    levels = torch.zeros(b, c)
    shifts = torch.zeros(b, c)
    regions = torch.zeros(b, *features.shape[-2:], dtype=torch.bool)
    tries = torch.zeros(b, dtype=torch.long)
    ratios = torch.zeros(b)
    accepted = torch.zeros(b, dtype=torch.bool)
    thresholds = torch.full((b,), max(0.0, float(accept) - start * accept_step))
    pending = torch.arange(b)
    for attempt in range(start, max_tries):
        picked = choose(pending, attempt)
        unit_mask, region = picked[0], picked[1]
        level = picked[2] if len(picked) > 2 else None
        move = picked[3] if len(picked) > 3 else None
        a = unit_mask.to(features)[:, :, None, None] * region.to(features)[:, None]
        set_to = None if level is None else level.to(features) * unit_mask.to(features)  # [P, C], 0 off the units
        v = None if set_to is None else set_to[:, :, None, None]
        s = None if move is None else move.to(features)[:, :, None, None] * region.to(features)[:, None]
        dev = features.device
        out = editor.generate(z[pending.to(dev)], ablation=a, replacement=v, features=features[pending.to(dev)],
                              shift=s)
        rho = change_ratio(to_input(original[pending.to(dev)]), to_input(out), pixels[pending.to(dev)],
                           imagenet_transform).cpu()
        met = rho >= thresholds[pending]
        ok = met | (attempt == max_tries - 1)
        done = pending[ok]
        accepted[done] = met[ok]
        edited[done.to(dev)] = out[ok.to(dev)]
        units[done] = unit_mask[ok.to(unit_mask.device)].bool().cpu()
        if set_to is not None:
            levels[done] = set_to[ok.to(dev)].float().cpu()
        if move is not None:
            shifts[done] = move[ok.to(move.device)].float().cpu()
        regions[done] = region[ok.to(region.device)].bool().cpu()
        ratios[done] = rho[ok]
        tries[pending] += 1
        pending = pending[~ok]
        if pending.numel() == 0:
            break
        thresholds[pending] = (thresholds[pending] - accept_step).clamp(min=0.0)
    return {"edited": edited, "units": units, "levels": levels, "shift": shifts, "region": regions, "tries": tries, "change_ratio": ratios,
            "accepted": accepted}
