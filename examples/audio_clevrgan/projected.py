"""A projected discriminator (the idea of Projected GAN, Sauer et al. 2021) on a feature network of our own.

Projected GAN reaches a given quality many times sooner than a discriminator on pixels, by judging images in the
feature space of a frozen pretrained network. Nothing can be downloaded here, so the frozen network is a
:class:`~audio_clevrgan.segmenter.FeatureEncoder` trained on rendered scenes with their ground truth (shape,
colour, material, size per pixel): its features already separate a cube from a sphere and rubber from metal,
which is exactly what a pixel discriminator on two CPU cores is slow to learn. It is *not* the evaluator of GAN
quality (that is a reader of another architecture and seed, never used in any GAN's training).

Structure, for images ``(B, 3, R, R)`` in [-1, 1]:

* the frozen encoder gives maps at 1/2, 1/4 and 1/8 resolution;
* cross-channel mixing: a fixed random 1x1 convolution per scale (Projected GAN's CCM: the discriminator cannot
  simply read off one feature, it must use them all);
* cross-scale mixing: coarser mixed maps are upsampled and added to finer ones (CSM, also fixed);
* one small spectral-norm discriminator per scale, each ending in a map of patch logits.

``forward`` returns the list of logit maps ``[(B, 1, h_i, w_i)]``; the losses average each map and sum over
scales. Images are translated (DiffAugment's "translation": a random shift of up to 1/8 of the side, border
pixels repeated, the same op for real and fake, differentiable) before the encoder when ``augment`` is on.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def translate(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by a random integer offset of up to ``ratio`` of its side; ``(B, C, H, W)`` -> same.

    Differentiable with respect to ``x`` (a gather); the floor is uniform, so border repetition is invisible.
    """
    B, _, H, W = x.shape
    sy, sx = int(H * ratio), int(W * ratio)
    dy = torch.randint(-sy, sy + 1, (B, 1, 1), generator=g).to(x.device)
    dx = torch.randint(-sx, sx + 1, (B, 1, 1), generator=g).to(x.device)
    yy = (torch.arange(H, device=x.device)[None, :, None] + dy).clamp(0, H - 1)  # (B, H, 1)
    xx = (torch.arange(W, device=x.device)[None, None, :] + dx).clamp(0, W - 1)  # (B, 1, W)
    idx = (yy * W + xx).flatten(1)  # (B, H*W)
    flat = x.flatten(2)  # (B, C, H*W)
    return flat.gather(2, idx[:, None, :].expand(-1, x.shape[1], -1)).view_as(x)


def _sn_conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2))


class _ScaleHead(nn.Module):
    """Stride-2 spectral-norm convolutions down to 4x4 (or one 3x3 when already there), then 1x1 to a logit map."""

    def __init__(self, cin: int, size: int, width: int):
        super().__init__()
        layers: list[nn.Module] = []
        c = cin
        while size > 4:
            layers += [_sn_conv(c, width, 3, stride=2), nn.LeakyReLU(0.2)]
            c, size = width, size // 2
            width = min(width * 2, 256)
        if not layers:
            layers += [_sn_conv(c, width, 3), nn.LeakyReLU(0.2)]
            c = width
        layers.append(_sn_conv(c, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ProjectedDiscriminator(nn.Module):
    """Image ``(B, 3, R, R)`` in [-1, 1] -> list of patch-logit maps, one per feature scale (see the module doc).

    ``encoder`` is frozen (eval mode, no gradient to its weights; gradients flow through it to the image).
    ``mix_channels[i]`` is the width of scale ``i`` after the random 1x1 mixing.
    """

    def __init__(self, encoder: nn.Module, resolution: int, mix_channels=(64, 128, 256), head_width: int = 64,
                 augment: bool = True, seed: int = 0):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.augment = augment
        with torch.no_grad():
            feats = encoder.features(torch.zeros(1, 3, resolution, resolution))
        widths = [f.shape[1] for f in feats]
        sizes = [f.shape[-1] for f in feats]
        if len(mix_channels) != len(widths):
            raise ValueError(f"mix_channels needs {len(widths)} widths (one per encoder scale), got {mix_channels}")
        g = torch.Generator().manual_seed(seed)
        # fixed random projections (buffers: saved and restored with the discriminator, never trained)
        for i, (cin, cout) in enumerate(zip(widths, mix_channels, strict=True)):
            w = torch.randn(cout, cin, 1, 1, generator=g) / cin**0.5
            self.register_buffer(f"ccm{i}", w)
        for i in range(len(widths) - 1):
            cin, cout = mix_channels[i + 1], mix_channels[i]
            self.register_buffer(f"csm{i}", torch.randn(cout, cin, 1, 1, generator=g) / cin**0.5)
        self.heads = nn.ModuleList(
            _ScaleHead(c, s, head_width) for c, s in zip(mix_channels, sizes, strict=True)
        )
        self.n_scales = len(widths)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen BatchNorm statistics, whatever mode the discriminator is in
        return self

    def forward(self, x: torch.Tensor, g: torch.Generator | None = None) -> list[torch.Tensor]:
        if self.augment and self.training:
            x = translate(x, g)
        feats = self.encoder.features((x + 1) / 2)
        mixed = [F.conv2d(f, getattr(self, f"ccm{i}")) for i, f in enumerate(feats)]
        for i in range(self.n_scales - 2, -1, -1):  # coarse to fine
            up = F.interpolate(mixed[i + 1], size=mixed[i].shape[-2:], mode="bilinear", align_corners=False)
            mixed[i] = mixed[i] + F.conv2d(up, getattr(self, f"csm{i}"))
        return [head(m) for head, m in zip(self.heads, mixed, strict=True)]


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimiser should update (the frozen encoder's are left out)."""
    return [p for p in module.parameters() if p.requires_grad]


__all__ = ["ProjectedDiscriminator", "trainable_parameters", "translate"]
