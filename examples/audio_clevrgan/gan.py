"""A progressive-GAN-style generator (without progressive growing) and its discriminator.

The generator follows the structure GAN Dissection and "Learning Words by Drawing Images" edit: an
``nn.Sequential`` of blocks named ``layer1 ... layerN`` and ``output_RxR``, so that a forward hook can target a
layer by name (``dict(G.named_modules())["layer4"]`` or simply ``G.layer4``).

* ``layer1``: PixelNorm -> 4x4 conv with padding 3 (z viewed as ``(B, z_dim, 1, 1)``) -> 4x4 map -> LeakyReLU(0.2);
* ``layer2``: PixelNorm -> 3x3 conv at 4x4;
* then per resolution two blocks: odd layer PixelNorm -> nearest x2 upsampling -> 3x3 conv, even layer
  PixelNorm -> 3x3 conv; so ``layer3`` goes 4 -> 8 and **``layer4`` outputs the ``C x 8 x 8`` map h4** that edits
  ablate;
* ``output_RxR``: PixelNorm -> 1x1 conv to RGB, unclamped (``Generator.generate`` clamps to [-1, 1]).

Convolutions use the equalised learning rate (weights ~ N(0, 1) scaled at run time by ``gain / sqrt(fan_in)``,
gain sqrt(2) for hidden layers and 1 for the output). Images are ``(B, 3, R, R)`` in [-1, 1].

Training recipes (discriminator normalisation, loss, R1, EMA) are chosen by measured quality; see
``checkpoints/README.md``.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# --------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GanConfig:
    """Architecture and training recipe.

    ``g_channels[i]`` is the generator width at resolution ``4 * 2**i`` (so ``g_channels[1]`` is C of the 8x8
    layer4); ``d_channels[i]`` is the discriminator width at resolution ``resolution / 2**i``.
    """

    z_dim: int = 128
    resolution: int = 64
    g_channels: tuple[int, ...] = (256, 256, 128, 64, 32)
    d_channels: tuple[int, ...] = (32, 64, 128, 256, 256)
    d_norm: str = "spectral"  # "spectral" (plain convs + spectral norm) or "equalized" (equalised lr)
    loss: str = "hinge"  # "hinge" or "nonsat" (non-saturating logistic)
    r1_gamma: float = 0.0  # R1 penalty weight on real images (0 = off)
    r1_every: int = 16  # lazy R1: apply every n steps, scaled by n
    batch_size: int = 64
    lr_g: float = 1e-3  # equalised-lr generator: weights are N(0, 1), so this is a relative step
    lr_d: float = 4e-4
    betas: tuple[float, float] = (0.0, 0.99)
    ema_decay: float = 0.999
    mbstd: bool = True  # minibatch standard deviation feature in the discriminator
    #: resolutions above this get one convolution (the upsampling one) instead of two; 0 = two everywhere.
    #: The 4x4 and 8x8 blocks always have two, so ``layer4`` stays the ``C x 8 x 8`` map that edits ablate.
    g_double_upto: int = 0
    #: "residual" (a pixel discriminator, :class:`Discriminator`) or "projected"
    #: (:class:`audio_clevrgan.projected.ProjectedDiscriminator` on the frozen feature network ``d_features``)
    d_arch: str = "residual"
    d_features: str = ""  # path of the feature network's checkpoint (``segmenter.pt`` of an "encoder" reader)
    augment: bool = False  # random translation of real and fake images before the projected discriminator
    #: "dcgan" (:class:`Generator`: everything learned from z) or "scene"
    #: (:class:`audio_clevrgan.scene_gan.SceneCodedGenerator`: z picks a scene, a learned network draws it)
    g_arch: str = "dcgan"
    scene_profile: str = "cpu"  # the scene sampler of a "scene" generator (``render.SCENE_PROFILES``)
    #: losses of a "scene" generator, trained on (latent, rendered image) pairs: L1 on pixels (object pixels weigh
    #: ``1 + obj_weight``), ``perc_weight`` x the L1 distance in the frozen feature network ``perc_features``,
    #: ``adv_weight`` x the adversarial generator loss of the pixel discriminator (0 = no discriminator steps)
    obj_weight: float = 0.0
    perc_weight: float = 0.0
    perc_features: str = ""
    adv_weight: float = 0.0
    #: units per attribute value in an attribute-factored ``layer4`` of a "scene" generator (0 = not factored; see
    #: :class:`audio_clevrgan.scene_gan.FactoredPainter`): every shape, colour and material value but a default
    #: (sphere, gray, rubber) owns this many units, on only where an object of that value is drawn
    g_factored: int = 0

    def __post_init__(self) -> None:
        n = int(round(math.log2(self.resolution))) - 1
        if 2 ** (n + 1) != self.resolution or self.resolution < 8:
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        if len(self.g_channels) != n or len(self.d_channels) != n:
            raise ValueError(
                f"resolution {self.resolution} needs {n} generator and discriminator widths "
                f"(4x4 ... {self.resolution}x{self.resolution}), got {len(self.g_channels)} and {len(self.d_channels)}"
            )
        if self.d_norm not in ("spectral", "equalized"):
            raise ValueError(f"d_norm must be 'spectral' or 'equalized', got {self.d_norm!r}")
        if self.loss not in ("hinge", "nonsat"):
            raise ValueError(f"loss must be 'hinge' or 'nonsat', got {self.loss!r}")
        if self.d_arch not in ("residual", "projected"):
            raise ValueError(f"d_arch must be 'residual' or 'projected', got {self.d_arch!r}")
        if self.d_arch == "projected" and not self.d_features:
            raise ValueError("d_arch 'projected' needs d_features: the path of a trained feature network")
        if self.g_arch not in ("dcgan", "scene"):
            raise ValueError(f"g_arch must be 'dcgan' or 'scene', got {self.g_arch!r}")
        if self.perc_weight > 0 and not self.perc_features:
            raise ValueError("perc_weight > 0 needs perc_features: the path of a trained feature network")
        if self.g_factored and self.g_arch != "scene":
            raise ValueError("g_factored needs g_arch 'scene'")
        if self.g_factored < 0:
            raise ValueError(f"g_factored must be >= 0, got {self.g_factored}")
        if self.g_double_upto and self.g_double_upto < 8:
            raise ValueError(f"g_double_upto must be 0 or >= 8 (layer4 is the 8x8 map), got {self.g_double_upto}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> GanConfig:
        names = {f.name for f in dataclasses.fields(GanConfig)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return GanConfig(**kw)


#: Named recipes. ``tiny`` is for tests; ``cpu`` trains on two cores; ``gpu`` is the committed checkpoint's size.
GAN_PROFILES: dict[str, GanConfig] = {
    "tiny": GanConfig(
        z_dim=16, resolution=16, g_channels=(32, 32, 16), d_channels=(16, 32, 32), batch_size=8, mbstd=True
    ),
    "cpu": GanConfig(g_channels=(128, 128, 64, 32, 16), d_channels=(16, 32, 64, 128, 128)),
    "gpu": GanConfig(),
}
# the StyleGAN2-like alternative: equalised-lr discriminator, non-saturating loss, lazy R1
_R1 = dict(d_norm="equalized", loss="nonsat", r1_gamma=0.1, lr_g=2e-3, lr_d=2e-3)
GAN_PROFILES["cpu-r1"] = dataclasses.replace(GAN_PROFILES["cpu"], **_R1)
GAN_PROFILES["gpu-r1"] = dataclasses.replace(GAN_PROFILES["gpu"], **_R1)
# the CPU recipe search (benchmarks/gan_recipes.py): one convolution at 32 and 64 px, a lighter pixel discriminator
GAN_PROFILES["cpu-lite-r1"] = dataclasses.replace(
    GAN_PROFILES["cpu-r1"], g_double_upto=16, d_channels=(8, 16, 64, 128, 128), batch_size=32
)
#: the projected discriminator on the feature network trained by
#: ``python -m audio_clevrgan.train_scripts segmenter --profile features --seed 1`` (committed; ``--features``
#: overrides the path, which is relative to the repository root)
GAN_PROFILES["cpu-projected"] = dataclasses.replace(
    GAN_PROFILES["cpu"], g_double_upto=16, d_arch="projected", d_features="examples/audio_clevrgan/checkpoints/features.pt",
    loss="hinge", batch_size=32, lr_g=1e-3, lr_d=2e-4, augment=True,
)
#: scene-coded generators (``audio_clevrgan.scene_gan``), trained on (latent, rendered image) pairs; the painter's
#: hidden width 128, layer4 128 x 8 x 8, one convolution per resolution above 16 px, no discriminator unless
#: ``adv_weight`` > 0 (then the lite pixel discriminator, hinge)
GAN_PROFILES["cpu-scene"] = GanConfig(
    g_arch="scene", g_channels=(128, 128, 64, 32, 16), g_double_upto=16, d_channels=(8, 16, 64, 128, 128),
    batch_size=32, lr_g=1e-3, lr_d=1e-3, obj_weight=4.0, loss="hinge", d_norm="spectral",
)
GAN_PROFILES["cpu-scene-perc"] = dataclasses.replace(
    GAN_PROFILES["cpu-scene"], perc_weight=1.0, perc_features="examples/audio_clevrgan/checkpoints/features.pt"
)
GAN_PROFILES["cpu-scene-adv"] = dataclasses.replace(GAN_PROFILES["cpu-scene"], adv_weight=0.05)
#: cpu-scene-perc with an attribute-factored layer4: 10 value groups of 8 units (cube, cylinder, 7 colours, metal)
#: beside 48 attribute-blind geometry units, so ablating a value's units redraws the object with the default value
GAN_PROFILES["cpu-scene-factored"] = dataclasses.replace(GAN_PROFILES["cpu-scene-perc"], g_factored=8)
GAN_PROFILES["tiny-scene"] = GanConfig(
    g_arch="scene", z_dim=128, resolution=16, g_channels=(16, 16, 8), d_channels=(8, 16, 16), batch_size=4,
    obj_weight=4.0,
)
GAN_PROFILES["tiny-scene-factored"] = dataclasses.replace(GAN_PROFILES["tiny-scene"], g_channels=(16, 24, 8),
                                                          g_factored=2)


# --------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------


class PixelNorm(nn.Module):
    """x / sqrt(mean_c x^2 + eps), per pixel. ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps)


class EqConv2d(nn.Module):
    """Convolution with the equalised learning rate: weight ~ N(0, 1), scaled by ``gain / sqrt(fan_in)``."""

    def __init__(
        self, cin: int, cout: int, kernel: int, padding: int = 0, gain: float = math.sqrt(2), bias=True
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale = gain / math.sqrt(cin * kernel * kernel)
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        cout, cin, k, _ = self.weight.shape
        return f"{cin}, {cout}, kernel_size={k}, padding={self.padding}"


class EqLinear(nn.Module):
    def __init__(self, cin: int, cout: int, gain: float = math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = gain / math.sqrt(cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class GBlock(nn.Module):
    """One named generator layer: PixelNorm -> [nearest x2] -> conv -> LeakyReLU(0.2)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, padding: int = 1, upsample: bool = False):
        super().__init__()
        self.norm = PixelNorm()
        self.upsample = upsample
        self.conv = EqConv2d(cin, cout, kernel, padding)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.act(self.conv(x))


class OutputBlock(nn.Module):
    """PixelNorm -> 1x1 conv to RGB (gain 1), no activation."""

    def __init__(self, cin: int):
        super().__init__()
        self.norm = PixelNorm()
        self.conv = EqConv2d(cin, 3, 1, 0, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


# --------------------------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------------------------


class NamedLayers:
    """What GAN Dissection's edits need of a generator whose children run in order (``layer1 ... output_RxR``):
    the layer names, ``z_dim`` and ``decode`` from an (edited) layer output. Shared by both generators."""

    config: GanConfig

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    @property
    def layer_names(self) -> list[str]:
        return [name for name, _ in self.named_children()]

    def decode(self, h: torch.Tensor, after: str = "layer4") -> torch.Tensor:
        """Run the layers after ``after`` on its (possibly edited) output ``h``; returns unclamped images."""
        names = self.layer_names
        if after not in names:
            raise KeyError(after)
        for name in names[names.index(after) + 1 :]:
            h = getattr(self, name)(h)
        return h


class Generator(NamedLayers, nn.Sequential):
    """z ``(B, z_dim)`` -> image ``(B, 3, R, R)`` (unclamped; ``generate`` clamps to [-1, 1]).

    Children are ``layer1 ... layerN`` and ``output_{R}x{R}`` (``N = 2 log2(R) - 2``, fewer with
    ``config.g_double_upto``); ``layer4`` outputs ``(B, C, 8, 8)`` with ``C = config.g_channels[1]``.
    """

    def __init__(self, config: GanConfig = GAN_PROFILES["gpu"]):
        ch = config.g_channels
        mods: OrderedDict[str, nn.Module] = OrderedDict()
        mods["layer1"] = GBlock(config.z_dim, ch[0], kernel=4, padding=3)
        mods["layer2"] = GBlock(ch[0], ch[0])
        n = 3
        for i in range(1, len(ch)):
            mods[f"layer{n}"] = GBlock(ch[i - 1], ch[i], upsample=True)
            n += 1
            if not config.g_double_upto or 4 * 2**i <= config.g_double_upto:
                mods[f"layer{n}"] = GBlock(ch[i], ch[i])
                n += 1
        mods[f"output_{config.resolution}x{config.resolution}"] = OutputBlock(ch[-1])
        super().__init__(mods)
        self.config = config

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, z_dim)`` or ``(B, z_dim, 1, 1)`` -> ``(B, 3, R, R)``, unclamped."""
        if z.dim() == 2:
            z = z[:, :, None, None]
        return super().forward(z)

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], ``(B, 3, R, R)``, from latents ``(B, z_dim)`` (no gradient)."""
        return self(z.to(next(self.parameters()).device)).clamp(-1, 1)

    def features(self, z: torch.Tensor, upto: str = "layer4") -> torch.Tensor:
        """Run the layers up to and including ``upto``; for ``layer4``: ``(B, z_dim) -> (B, C, 8, 8)``."""
        x = z[:, :, None, None] if z.dim() == 2 else z
        for name, mod in self.named_children():
            x = mod(x)
            if name == upto:
                return x
        raise KeyError(upto)

def standard_z(n: int, seed: int = 0, z_dim: int = 128) -> torch.Tensor:
    """The z table of GAN Dissection: ``RandomState(seed).standard_normal(n * z_dim)`` as ``(n, z_dim)`` float32.

    Row k does not depend on ``n``.
    """
    return torch.from_numpy(np.random.RandomState(seed).standard_normal(n * z_dim).reshape(n, z_dim)).float()


# --------------------------------------------------------------------------------------------------------------
# Discriminator
# --------------------------------------------------------------------------------------------------------------


def _dconv(cin: int, cout: int, kernel: int, padding: int, norm: str) -> nn.Module:
    if norm == "equalized":
        return EqConv2d(cin, cout, kernel, padding)
    return nn.utils.parametrizations.spectral_norm(nn.Conv2d(cin, cout, kernel, padding=padding))


def _dlinear(cin: int, cout: int, norm: str, gain: float = math.sqrt(2)) -> nn.Module:
    if norm == "equalized":
        return EqLinear(cin, cout, gain)
    return nn.utils.parametrizations.spectral_norm(nn.Linear(cin, cout))


class DBlock(nn.Module):
    """Residual block: two 3x3 convs and a 2x average-pool, with a 1x1 skip; ``(B, Cin, H, W) -> (B, Cout, H/2, W/2)``."""

    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__()
        self.conv1 = _dconv(cin, cin, 3, 1, norm)
        self.conv2 = _dconv(cin, cout, 3, 1, norm)
        self.skip = _dconv(cin, cout, 1, 0, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv1(x), 0.2)
        y = F.avg_pool2d(F.leaky_relu(self.conv2(y), 0.2), 2)
        s = self.skip(F.avg_pool2d(x, 2))
        return (y + s) / math.sqrt(2)


class Discriminator(nn.Module):
    """Image ``(B, 3, R, R)`` in [-1, 1] -> realness logit ``(B,)``."""

    def __init__(self, config: GanConfig = GAN_PROFILES["gpu"]):
        super().__init__()
        ch, norm = config.d_channels, config.d_norm
        self.from_rgb = _dconv(3, ch[0], 1, 0, norm)
        self.blocks = nn.Sequential(*[DBlock(ch[i], ch[i + 1], norm) for i in range(len(ch) - 1)])
        self.mbstd = config.mbstd
        self.conv = _dconv(ch[-1] + int(config.mbstd), ch[-1], 3, 1, norm)
        self.fc = _dlinear(ch[-1] * 16, ch[-1], norm)
        self.out = _dlinear(ch[-1], 1, norm, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.from_rgb(x), 0.2)
        x = self.blocks(x)  # (B, C, 4, 4)
        if self.mbstd:
            g = min(4, x.shape[0])
            if x.shape[0] % g:
                g = 1
            y = x.view(g, -1, *x.shape[1:]).float()
            std = (y.var(0, unbiased=False) + 1e-8).sqrt().mean((1, 2, 3))  # (B / g,)
            std = std.repeat(g)[:, None, None, None].expand(-1, 1, *x.shape[2:]).to(x.dtype)
            x = torch.cat([x, std], 1)
        x = F.leaky_relu(self.conv(x), 0.2)
        x = F.leaky_relu(self.fc(x.flatten(1)), 0.2)
        return self.out(x).squeeze(1)


def build_discriminator(config: GanConfig) -> nn.Module:
    """The discriminator of ``config.d_arch``; a projected one loads its frozen feature network from disk."""
    if config.d_arch == "residual":
        return Discriminator(config)
    from .projected import ProjectedDiscriminator
    from .segmenter import load_segmenter

    return ProjectedDiscriminator(load_segmenter(config.d_features), config.resolution, augment=config.augment)


def discriminate(D: nn.Module, x: torch.Tensor, g: torch.Generator | None = None) -> list[torch.Tensor]:
    """Logits of either discriminator as a list of tensors (one ``(B,)`` for the residual one, one map per scale
    for the projected one); ``g`` draws the projected discriminator's augmentation."""
    if isinstance(D, Discriminator):
        return [D(x)]
    return D(x, g)


# --------------------------------------------------------------------------------------------------------------
# Losses and EMA
# --------------------------------------------------------------------------------------------------------------


def d_loss(config: GanConfig, real_logits, fake_logits) -> torch.Tensor:
    """Discriminator loss; logits are tensors or lists of tensors (one per scale, summed)."""
    if isinstance(real_logits, list):
        return sum(d_loss(config, r, f) for r, f in zip(real_logits, fake_logits, strict=True))
    if config.loss == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss(config: GanConfig, fake_logits) -> torch.Tensor:
    """Generator loss; logits are a tensor or a list of tensors (one per scale, summed)."""
    if isinstance(fake_logits, list):
        return sum(g_loss(config, f) for f in fake_logits)
    if config.loss == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for parameters; buffers are copied."""
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm, 1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


@dataclass
class GanState:
    """Everything a resumed run needs."""

    config: GanConfig
    G: Generator
    D: nn.Module  # Discriminator or ProjectedDiscriminator
    G_ema: Generator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    step: int = 0
    history: list = field(default_factory=list)
    cpu_seconds: float = 0.0  # process CPU time spent in training steps, over all resumed parts


def build_generator(config: GanConfig) -> nn.Module:
    """The generator that ``config.g_arch`` names (both have ``features``, ``decode``, ``generate``, ``layer4``)."""
    if config.g_arch == "scene":
        from .scene_gan import SceneCodedGenerator

        return SceneCodedGenerator(config)
    return Generator(config)


def build_gan(config: GanConfig, seed: int, device: str | torch.device = "cpu") -> GanState:
    """Fresh generator, discriminator, EMA copy and optimisers, initialised from ``seed``."""
    torch.manual_seed(seed)
    G = build_generator(config).to(device)
    D = build_discriminator(config).to(device)
    G_ema = build_generator(config).to(device)
    G_ema.load_state_dict(G.state_dict())
    G_ema.requires_grad_(False).eval()
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr_g, betas=config.betas, eps=1e-8)
    d_params = [p for p in D.parameters() if p.requires_grad]  # a projected D's feature network stays frozen
    opt_d = torch.optim.Adam(d_params, lr=config.lr_d, betas=config.betas, eps=1e-8)
    return GanState(config, G, D, G_ema, opt_g, opt_d)


def train_step(
    st: GanState, real: torch.Tensor, z_d: torch.Tensor, z_g: torch.Tensor, g: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """One discriminator step and one generator step; returns detached scalar tensors (losses, mean real logit).

    Args:
        real: ``(B, 3, R, R)`` real images in [-1, 1].
        z_d, z_g: ``(B, z_dim)`` latents for the D and the G step.
        g: draws the projected discriminator's augmentation (seeded per step for an exact resume).
    """
    cfg = st.config
    G, D = st.G, st.D
    # discriminator
    st.opt_d.zero_grad(set_to_none=True)
    with torch.no_grad():
        fake = G(z_d)
    do_r1 = cfg.r1_gamma > 0 and st.step % cfg.r1_every == 0
    if do_r1:
        real = real.detach().requires_grad_(True)
    real_logits = discriminate(D, real, g)
    loss_d = d_loss(cfg, real_logits, discriminate(D, fake, g))
    stats = {"loss_d": loss_d.detach(), "real": sum(r.detach().mean() for r in real_logits)}
    if do_r1:
        (grad,) = torch.autograd.grad(sum(r.sum() for r in real_logits), real, create_graph=True)
        r1 = grad.pow(2).flatten(1).sum(1).mean()
        loss_d = loss_d + cfg.r1_gamma / 2 * r1 * cfg.r1_every
        stats["r1"] = r1.detach()
    loss_d.backward()
    st.opt_d.step()
    # generator
    st.opt_g.zero_grad(set_to_none=True)
    d_params = [p for p in D.parameters() if p.requires_grad]
    for p in d_params:
        p.requires_grad_(False)
    loss_g = g_loss(cfg, discriminate(D, G(z_g), g))
    loss_g.backward()
    for p in d_params:
        p.requires_grad_(True)
    st.opt_g.step()
    st.step += 1
    # EMA with a warm-up so early samples are not dominated by the random initialisation
    decay = min(cfg.ema_decay, (1 + st.step) / (10 + st.step))
    ema_update(st.G_ema, G, decay)
    stats["loss_g"] = loss_g.detach()
    return stats


def count_parameters(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


__all__ = [
    "Discriminator",
    "GAN_PROFILES",
    "GanConfig",
    "GanState",
    "Generator",
    "build_discriminator",
    "build_generator",
    "discriminate",
    "PixelNorm",
    "build_gan",
    "count_parameters",
    "d_loss",
    "ema_update",
    "g_loss",
    "standard_z",
    "train_step",
]
