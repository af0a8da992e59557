"""DaveNet for Audio CLEVRGAN: an audio CNN over log-mel frames and a VGG-style image CNN, scored by matchmaps.

Shapes (paper profile): image Float[B, 3, 64, 64] -> Float[B, D, 8, 8]; audio Float[B, 1, 40, T] with nframes Long[B]
-> Float[B, D, T / 8] with valid lengths nframes // 8. The image map lines up one-to-one with the GAN's 8x8 layer, so
a matchmap peak says where to edit.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import Tensor, nn

from negmine import DualEncoder, Embedding, MatchmapScore

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@attrs.frozen
class DavenetConfig:
    """Widths and depth of both towers.

    audio_widths: channels of the convs before the last (the first is the 40x1 frequency-collapsing conv);
        the last conv outputs ``dim``. ``audio_pools`` max-pools (kernel 3, stride 2) follow the 2nd.. convs.
    image_blocks: per VGG block, (channels, convs); each block ends with a 2x2 max-pool.
    """

    dim: int = 512
    audio_widths: tuple[int, ...] = (128, 256, 512, 512)
    audio_kernels: tuple[int, ...] = (11, 17, 17, 17)
    audio_pools: int = 3
    audio_pool_first: bool = False  # also pool right after the 40x1 conv (halves every later conv's cost)
    image_blocks: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 3), (512, 3))
    image_size: int = 64
    batchnorm: bool = False
    aggregation: str = "misa"
    image_relu: bool = True  # ReLU after the image tower's last conv (LBD); DaveNet's original has none
    # Subtract each image's mean region feature (after the ReLU, if any), so that a region matches a word only by how
    # it differs from the rest of its image. Without it the cpu models put a scene-wide descriptor on every floor
    # region and every word's matchmap peaks there (issue 16: oracle-cpu.md).
    image_center: bool = False


PROFILES: dict[str, DavenetConfig] = {
    # The paper's widths (DaveNet audio, LBD's 3-pool "small" variant; VGG16 trunk) for a GPU.
    "paper": DavenetConfig(),
    # The 7-conv, 5-pool "large" audio variant of the paper's code.
    "paper-large": DavenetConfig(audio_widths=(128, 256, 512, 512, 512, 512), audio_kernels=(11, 17, 17, 17, 17, 17),
                                 audio_pools=5),
    # Narrow towers that learn within minutes on 2 CPU cores (chosen by measurement: see docs/audio-clevrgan.md).
    # No ReLU after the image tower's last conv: at this width it left about 10 of 128 image units alive (test R@10
    # 60.1% at 1,600 steps, 87.3% without; benchmarks/results/embedding_usage.md); the default up to commit 829be0f.
    "cpu": DavenetConfig(dim=128, audio_widths=(32, 64, 128, 128), audio_pool_first=True,
                         image_blocks=((32, 1), (64, 1), (128, 1)), batchnorm=True, image_relu=False),
    # Tiny towers for tests.
    "tiny": DavenetConfig(dim=16, audio_widths=(8, 16, 16, 16), image_blocks=((8, 1), (16, 1), (16, 1)),
                          batchnorm=True),
}


class AudioEncoder(nn.Module):
    """BN(1) -> conv 40x1 -> convs 1xk with max-pools -> Float[B, D, T'] (ReLU after every conv, as DaveNet)."""

    def __init__(self, cfg: DavenetConfig) -> None:
        super().__init__()
        widths = (*cfg.audio_widths, cfg.dim)
        layers: list[nn.Module] = [nn.BatchNorm2d(1), nn.Conv2d(1, widths[0], (40, 1)), nn.ReLU(inplace=True)]
        pools = 0
        if cfg.audio_pool_first:
            layers.append(nn.MaxPool2d((1, 3), stride=(1, 2), padding=(0, 1)))
        for i, k in enumerate(cfg.audio_kernels):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], (1, k), padding=(0, k // 2)))
            if cfg.batchnorm:
                layers.append(nn.BatchNorm2d(widths[i + 1]))
            layers.append(nn.ReLU(inplace=True))
            if pools < cfg.audio_pools and i < len(cfg.audio_kernels) - 1:
                layers.append(nn.MaxPool2d((1, 3), stride=(1, 2), padding=(0, 1)))
                pools += 1
        self.net = nn.Sequential(*layers)
        self.pools = pools + int(cfg.audio_pool_first)

    def output_lengths(self, nframes: Tensor) -> Tensor:
        """Valid output frames for input lengths: each pool maps L -> floor((L - 1) / 2) + 1, at least 1."""
        lengths = nframes.clone()
        for _ in range(self.pools):
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
        return lengths.clamp_min(1)

    def forward(self, feats: Tensor, nframes: Tensor) -> Embedding:
        """feats: Float[B, 1, 40, T]; nframes: Long[B] -> Embedding(Float[B, D, T'], lengths Long[B])."""
        out = self.net(feats).squeeze(2)
        return Embedding(out, self.output_lengths(nframes).clamp_max(out.shape[-1]))


class ImageEncoder(nn.Module):
    """VGG-style conv trunk from scratch + a 3x3 conv to D (ReLU optional): Float[B, 3, S, S] -> Float[B, D, 8, 8]."""

    def __init__(self, cfg: DavenetConfig, image_relu_given: bool = False) -> None:
        """image_relu_given: ``cfg.image_relu`` was set by the user (not a profile default), so a checkpoint that
        disagrees is an error rather than the truth (see ``_load_from_state_dict``)."""
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        size = cfg.image_size
        for cout, convs in cfg.image_blocks:
            for _ in range(convs):
                layers.append(nn.Conv2d(cin, cout, 3, padding=1))
                if cfg.batchnorm:
                    layers.append(nn.BatchNorm2d(cout))
                layers.append(nn.ReLU(inplace=True))
                cin = cout
            if size > 8:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        if size != 8:
            raise ValueError(f"image_size {cfg.image_size} with {len(cfg.image_blocks)} blocks does not reach 8x8")
        layers.append(nn.Conv2d(cin, cfg.dim, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.final_relu = cfg.image_relu
        self.image_relu_given = image_relu_given
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # recorded in checkpoints: the ReLU has no weights, so without this a checkpoint could not say whether it
        # was trained with one (the cpu profile's default changed)
        self.register_buffer("arch_image_relu", torch.tensor(cfg.image_relu))
        self.center = cfg.image_center
        self.register_buffer("arch_image_center", torch.tensor(cfg.image_center))

    def forward(self, images: Tensor) -> Tensor:
        """images: Float[B, 3, S, S] in [0, 1] or UInt8[B, 3, S, S] -> Float[B, D, 8, 8]."""
        if images.dtype == torch.uint8:
            images = images.float().div(255)
        out = self.net((images - self.mean) / self.std)
        if self.final_relu:
            out = torch.relu(out)
        return out - out.mean(dim=(2, 3), keepdim=True) if self.center else out

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """A checkpoint's recorded ``image_relu`` wins over the profile default. A checkpoint from before it was
        recorded was trained with the ReLU (every profile's default up to commit 829be0f), unless the user gives
        ``image_relu`` explicitly."""
        key = prefix + "arch_image_relu"
        if key not in state_dict:
            state_dict[key] = torch.tensor(self.final_relu if self.image_relu_given else True)
        saved = bool(state_dict[key])
        if self.image_relu_given and saved != self.final_relu:
            error_msgs.append(f"the checkpoint's image tower was trained with image_relu={str(saved).lower()}, but "
                              f"image_relu={str(self.final_relu).lower()} was given")
        self.final_relu = saved
        # checkpoints from before image_center existed were trained without it
        key = prefix + "arch_image_center"
        saved_center = bool(state_dict.setdefault(key, torch.tensor(False)))
        if saved_center != self.center:
            error_msgs.append(f"the checkpoint's image tower was trained with image_center={str(saved_center).lower()}, "
                              f"but this model has image_center={str(self.center).lower()}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class Davenet(DualEncoder):
    """Side a = image (dense 8x8 map), side b = audio (frame sequence); MISA matchmap score by default."""

    sides = ("image", "audio")

    def __init__(self, cfg: DavenetConfig, image_relu_given: bool = False) -> None:
        super().__init__(MatchmapScore(cfg.aggregation))
        self.cfg = cfg
        self.image = ImageEncoder(cfg, image_relu_given)
        self.audio = AudioEncoder(cfg)

    def encode(self, side: int, inputs) -> Embedding:
        """side 0: Float[B, 3, S, S] images in [0, 1] (or UInt8, converted); side 1: (Float[B, 1, 40, T], Long[B])."""
        if side == 0:
            return Embedding(self.image(inputs))
        feats, nframes = inputs
        return self.audio(feats.float(), nframes)

    def matchmap(self, images: Tensor, audio: tuple[Tensor, Tensor]) -> Tensor:
        """Float[B, 8, 8, T']: the matchmaps of pairs (image_i, audio_i) (heat maps, salient regions)."""
        return self.score.matchmap(self.encode(0, images), self.encode(1, audio))


def audio_receptive_field(cfg: DavenetConfig) -> int:
    """Input frames (10 ms each) that one output frame of the audio tower sees: 1 + sum over layers of
    (kernel - 1) x the layer's input stride, the 40x1 conv adding none and each max-pool (kernel 3, stride 2) adding 2
    and doubling the stride. The cpu profile sees 499 frames (5.0 s), the paper's tower 249."""
    field, jump = 1, 1
    if cfg.audio_pool_first:
        field, jump = field + 2 * jump, jump * 2
    pools = 0
    for i, k in enumerate(cfg.audio_kernels):
        field += (k - 1) * jump
        if pools < cfg.audio_pools and i < len(cfg.audio_kernels) - 1:
            field, jump = field + 2 * jump, jump * 2
            pools += 1
    return field


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_model(profile: str | DavenetConfig, image_size: int = 64, overrides: Sequence[tuple[str, object]] = ()) -> Davenet:
    cfg = PROFILES[profile] if isinstance(profile, str) else profile
    cfg = attrs.evolve(cfg, image_size=image_size, **dict(overrides))
    return Davenet(cfg, image_relu_given="image_relu" in dict(overrides))


def parse_overrides(text: str) -> list[tuple[str, object]]:
    """``"dim=256,image_relu=false,audio_widths=32/64/128/128"`` -> typed (field, value) pairs for ``DavenetConfig``.

    Raises ValueError naming every unknown field (with the closest known one) and every unparsable value at once.
    """
    import difflib

    fields = {f.name: f for f in attrs.fields(DavenetConfig)}
    out: list[tuple[str, object]] = []
    problems: list[str] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(fields)})"
            problems.append(f"unknown DaveNet field {key!r}{hint}" if sep else f"{item!r} is not FIELD=VALUE")
            continue
        default = getattr(DavenetConfig(), key)
        try:
            out.append((key, parse_value(raw.strip(), default)))
        except ValueError:
            problems.append(f"{key}={raw!r}: expected a value like {default!r}")
    if problems:
        raise ValueError("; ".join(problems))
    return out


def parse_value(raw: str, default: object) -> object:
    """``raw`` read as the type of ``default``: a bool (1/true/yes/on, 0/false/no/off), an int, a tuple of ints
    joined by "/" (blocks as CxN), else the string; ValueError when it does not parse."""
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, tuple):  # ints separated by '/', blocks as CxN
        if default and isinstance(default[0], tuple):
            return tuple(tuple(int(x) for x in part.split("x")) for part in raw.split("/"))
        return tuple(int(x) for x in raw.split("/"))
    return raw
