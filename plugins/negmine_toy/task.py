"""The toy task: paired views of a shared latent.

Each item i has a latent z_i ~ N(0, I_L). Side ``a`` sees ``f(z_i) + noise`` and side ``b`` sees ``g(z_i) + noise``,
where f and g are fixed random two-layer networks (seeded by ``data_seed``), so the only thing the two sides share is
z_i: retrieval is possible, and chance level is known (k / n). With ``views > 1`` every latent yields several pairs
that share a group id (like several captions of one image), which generators must never use as negatives.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from negmine import CosineScore, DotScore, DualEncoder, Embedding, MatchmapScore, Task, TensorPairs

OPTIONS = {
    "n_train": (None, "training pairs (profile default: 4000; small: 600)"),
    "n_val": (None, "validation pairs (default 500; small: 200)"),
    "latent_dim": (8, "dimension of the shared latent"),
    "noise": (0.1, "std of the per-view noise"),
    "views": (1, "pairs per latent (sharing a group id)"),
    "data_seed": (1234, "seed of the views and the data (independent of the training seed)"),
    "score": ("dot", "dot or cosine (default profile)"),
}

PROFILES = {
    "default": {"n_train": 4000, "n_val": 500, "hidden": 128, "dim": 64},
    "gan": {"n_train": 600, "n_val": 200, "hidden": 32, "dim": 16},
    "small": {"n_train": 600, "n_val": 200, "hidden": 32, "dim": 16},
    "dense": {"n_train": 4000, "n_val": 500, "hidden": 128, "dim": 32},
}
A_DIM, B_DIM = 32, 24
GRID, SEQ = 4, 6


def _view(gen: torch.Generator, latent_dim: int, out_dim: int) -> tuple[Tensor, Tensor]:
    w1 = torch.randn(latent_dim, 64, generator=gen) / latent_dim**0.5
    w2 = torch.randn(64, out_dim, generator=gen) / 8.0
    return w1, w2


def make_pairs(n: int, latent_dim: int, noise: float, views: int, data_seed: int, split: str):
    """Return (a Float[n, 32], b Float[n, 24], groups Long[n], z Float[n, L])."""
    view_gen = torch.Generator().manual_seed(data_seed)
    fa = _view(view_gen, latent_dim, A_DIM)
    fb = _view(view_gen, latent_dim, B_DIM)
    gen = torch.Generator().manual_seed(data_seed + {"train": 1, "val": 2, "test": 3}[split])
    n_latents = -(-n // views)
    z = torch.randn(n_latents, latent_dim, generator=gen)
    z = z.repeat_interleave(views, dim=0)[:n]
    groups = torch.arange(n_latents).repeat_interleave(views)[:n]
    a = torch.tanh(z @ fa[0]) @ fa[1] + noise * torch.randn(n, A_DIM, generator=gen)
    b = torch.sin(z @ fb[0]) @ fb[1] + noise * torch.randn(n, B_DIM, generator=gen)
    return a, b, groups, z


class TinyGan(nn.Module):
    """A fixed random generator z Float[N, L] -> images Float[N, 3, 16, 16] in [-1, 1] whose 8x8 layer is named
    ``layer4`` (32 channels) as in a ProGAN: the toy stand-in for a trained GAN, so GAN-edit generators run in
    seconds."""

    def __init__(self, latent_dim: int, seed: int, channels: int = 32) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.channels = channels
        self.layer1 = nn.Linear(latent_dim, channels * 16)
        self.layer4 = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.output = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(channels, 3, 3, padding=1), nn.Tanh())
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=gen) * (1.0 / max(1, param[0].numel()) ** 0.5))
        self.requires_grad_(False)

    def forward(self, z: Tensor) -> Tensor:
        h = self.layer1(z).view(-1, self.channels, 4, 4)
        return self.output(self.layer4(h))


class ImageTower(nn.Module):
    """Float[N, 3, 16, 16] in [0, 1] -> Float[N, D, 8, 8]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, dim, 3, stride=2, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))


class ToyDualEncoder(DualEncoder):
    """Two MLP towers. Vector mode: Float[N, D] embeddings. Dense mode: side a emits a D x 4 x 4 map, side b a D x 6
    sequence, scored by MISA, so matchmap-based code can be exercised on the toy."""

    sides = ("a", "b")

    def __init__(self, hidden: int, dim: int, score: str = "dot", dense: bool = False, gan: bool = False) -> None:
        if dense or gan:
            scorer = MatchmapScore("misa")
        else:
            scorer = CosineScore() if score == "cosine" else DotScore()
        super().__init__(scorer)
        dense = dense or gan
        self.dense, self.dim, self.gan = dense, dim, gan
        self.tower_a = ImageTower(dim) if gan else _mlp(A_DIM, hidden, dim * (GRID * GRID if dense else 1))
        self.tower_b = _mlp(B_DIM, hidden, dim * (SEQ if dense else 1))

    def encode(self, side: int, inputs: Tensor) -> Embedding:
        """inputs: Float[N, 32] (side a) or Float[N, 24] (side b)."""
        if side == 0 and self.gan:
            return Embedding(self.tower_a(inputs))
        if side == 0:
            out = self.tower_a(inputs)
            return Embedding(out.view(-1, self.dim, GRID, GRID) if self.dense else out)
        out = self.tower_b(inputs)
        if self.dense:
            n = out.shape[0]
            return Embedding(out.view(n, self.dim, SEQ), torch.full((n,), SEQ, dtype=torch.long, device=out.device))
        return Embedding(out)


def build_toy(profile: str = "default", seed: int = 0, options: dict | None = None) -> Task:
    """Build the toy task for a profile. ``seed`` initialises the model; ``options["data_seed"]`` fixes the data."""
    opts = {k: v[0] for k, v in OPTIONS.items()}
    opts.update(options or {})
    prof = PROFILES[profile]
    n_train = int(opts["n_train"] or prof["n_train"])
    n_val = int(opts["n_val"] or prof["n_val"])
    splits, made = {}, []  # made: every split's tensors, for the data digest
    gan = TinyGan(int(opts["latent_dim"]), int(opts["data_seed"])) if profile == "gan" else None
    for split, n in (("train", n_train), ("val", n_val), ("test", n_val)):
        a, b, groups, z = make_pairs(n, int(opts["latent_dim"]), float(opts["noise"]), int(opts["views"]),
                                     int(opts["data_seed"]), split)
        if gan is not None:  # side a becomes the GAN's picture of the latent (floats, never quantised)
            with torch.no_grad():
                a = (gan(z) + 1) / 2
        splits[split] = TensorPairs(a, b, groups=groups, extras={"latent": z})
        made += [a, b]
    torch.manual_seed(seed)
    model = ToyDualEncoder(prof["hidden"], prof["dim"], score=str(opts["score"]), dense=profile == "dense",
                           gan=profile == "gan")
    provides = {"corpus", "latents"} | ({"dense_maps"} if profile in ("dense", "gan") else set())
    resources = {}
    if gan is not None:
        provides.add("gan")
        resources["gan"] = gan
    defaults = {"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "steps": 400, "eval_size": n_val,
                "weight_decay": 0.0, "log_every": 20, "checkpoint_every": 100}
    if profile in ("small", "gan"):
        defaults.update(batch_size=32, steps=60, log_every=10, checkpoint_every=20)
    return Task("toy", model, splits["train"], splits["val"], splits["test"], frozenset(provides), resources,
                defaults=defaults, data_digest=lambda: _tensor_digest(made))


def _tensor_digest(tensors: list[Tensor]) -> str:
    """16 hex digits of a SHA-256 over the tensors' shapes and bytes: the toy data is made in memory, so its identity
    is its content (a change to the generator or its options shows, as a rebuilt dataset on disk would)."""
    import hashlib

    digest = hashlib.sha256()
    for t in tensors:
        digest.update(f"{tuple(t.shape)} {t.dtype}\n".encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
