"""The ``audio-clevrgan`` negmine task: DaveNet on spoken captions of CLEVR-like images.

Side a is the image (UInt8[B, 3, S, S], converted to floats by the model), side b the audio: (Float[B, 1, 40, F]
log-mel features cropped or zero-padded to F frames, nframes Long[B]). Features are computed once with torchaudio
and cached next to the dataset (``cache/``), keyed by the frame count.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from negmine import Batch, PairedDataset, Task
from negmine.errors import DataError

from .dataset import load_features, load_image, read_dataset
from .davenet import PROFILES, build_model

DEFAULT_DATA = "data/audio-clevrgan"

OPTIONS = {
    "data_dir": (DEFAULT_DATA, "dataset directory built by `negmine data build audio-clevrgan`"),
    "audio_frames": (None, "frames per caption (crop/pad); default 1024 (paper), tiny profile 256"),
    "max_train": (0, "use at most this many training pairs (0: all)"),
}

TASK_DEFAULTS = {
    "paper": {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-7, "batch_size": 32,
              "steps": 30000, "lr_decay": 0.1, "lr_decay_every": 10000, "eval_every": 2000, "eval_size": 500,
              "checkpoint_every": 500, "log_every": 50},
    "cpu": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-7, "batch_size": 64, "steps": 1500,
            "lr_decay": 0.3, "lr_decay_every": 1000, "eval_every": 500, "eval_size": 500, "checkpoint_every": 100,
            "log_every": 20},
    "tiny": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 16, "steps": 20, "eval_size": 50,
             "checkpoint_every": 10, "log_every": 5},
}
TASK_DEFAULTS["paper-large"] = TASK_DEFAULTS["paper"]


def pad_or_crop_batch(feats: Tensor, frames: int) -> tuple[Tensor, Tensor]:
    """Float[40, T] list -> (Float[N, 40, frames] zero-padded or cut to the first frames, nframes Long[N])."""
    out = torch.zeros(len(feats), 40, frames, dtype=torch.float16)
    lengths = torch.zeros(len(feats), dtype=torch.long)
    for i, f in enumerate(feats):
        t = min(frames, f.shape[1])
        out[i, :, :t] = f[:, :t].to(torch.float16)
        lengths[i] = t
    return out, lengths


class AudioClevrganSplit(PairedDataset):
    """One split held in memory: images UInt8[N, 3, S, S], features Float16[N, 40, F], nframes Long[N]."""

    def __init__(self, root: Path, rows: list[dict], split: str, frames: int, latents: np.ndarray | None) -> None:
        self.root, self.split, self.frames = root, split, frames
        self.rows = [r for r in rows if r["split"] == split]
        if not self.rows:
            raise DataError(f"{str(root)!r} has no {split} pairs")
        self.images = torch.from_numpy(np.stack([load_image(root / r["image"]) for r in self.rows])).permute(0, 3, 1, 2)
        self.feats, self.nframes = self._features()
        self.latents = None
        if latents is not None:
            self.latents = torch.from_numpy(latents[[r["latent_row"] for r in self.rows]])
        self.groups = None
        self.positive_fn = None

    def use_generated_positives(self, fn) -> None:
        """Serve side-a images as ``fn(latents)`` (Float[B, 3, S, S] in [0, 1]) instead of the stored PNGs, so that
        edited negatives and their positives both skip quantisation."""
        if self.latents is None:
            raise DataError(f"{str(self.root)!r} has no latents.npy: generated positives need a GAN-built dataset")
        self.positive_fn = fn

    def _features(self) -> tuple[Tensor, Tensor]:
        key = hashlib.sha256(("|".join(r["audio"] for r in self.rows) + f"|{self.frames}").encode()).hexdigest()[:16]
        cache = self.root / "cache" / f"features-{self.split}-{self.frames}-{key}.pt"
        if cache.is_file():
            try:
                state = torch.load(cache, weights_only=True)
                return state["feats"], state["nframes"]
            except Exception:  # a torn cache file is rebuilt, never trusted
                pass
        feats, nframes = pad_or_crop_batch([load_features(self.root / r["audio"]) for r in self.rows], self.frames)
        cache.parent.mkdir(exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"feats": feats, "nframes": nframes}, tmp)
        os.replace(tmp, cache)
        return feats, nframes

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, ids: Tensor) -> Batch:
        ids = ids.long().cpu()
        extras = {} if self.latents is None else {"latent": self.latents[ids]}
        return Batch(self.side_batch(0, ids), self.side_batch(1, ids), ids, None, extras)

    def side_batch(self, side: int, ids: Tensor) -> Any:
        ids = ids.long().cpu()
        if side == 0:
            if self.positive_fn is not None:
                with torch.no_grad():
                    return self.positive_fn(self.latents[ids]).float().cpu()
            return self.images[ids]
        return (self.feats[ids].unsqueeze(1).float(), self.nframes[ids])


def build_task(profile: str = "cpu", seed: int = 0, options: dict | None = None) -> Task:
    """Load the dataset and build DaveNet for a profile (``cpu``, ``paper``, ``paper-large``, ``tiny``)."""
    opts = {k: v[0] for k, v in OPTIONS.items()}
    opts.update(options or {})
    root = Path(opts["data_dir"])
    meta, rows = read_dataset(root)
    frames = int(opts["audio_frames"] or (256 if profile == "tiny" else 1024))
    latents = np.load(root / "latents.npy") if (root / "latents.npy").is_file() else None
    max_train = int(opts["max_train"] or 0)
    if max_train:
        keep = {r["id"] for r in [r for r in rows if r["split"] == "train"][:max_train]}
        rows = [r for r in rows if r["split"] != "train" or r["id"] in keep]
    splits = {s: AudioClevrganSplit(root, rows, s, frames, latents) for s in ("train", "val", "test")}
    torch.manual_seed(seed)
    model = build_model(profile, image_size=int(meta["image_size"]))
    provides = {"corpus", "dense_maps"}
    resources: dict[str, Any] = {"data_dir": root, "meta": meta}
    if latents is not None:
        provides.add("latents")
        if (root / "gan.pt").is_file():
            provides.add("gan")
            resources["gan_path"] = root / "gan.pt"
            resources["gan_loader"] = lambda: _load_gan(root / "gan.pt")
    if (root / "segmenter.pt").is_file():
        resources["describe_images"] = _describer(root / "segmenter.pt")
    from .evaluate import attribute_test, rendered_test
    from .figures import figures

    return Task(
        "audio-clevrgan", model, splits["train"], splits["val"], splits["test"], frozenset(provides), resources,
        defaults=dict(TASK_DEFAULTS[profile]),
        evaluators={"attributes": attribute_test, "rendered": rendered_test, "figures": figures},
    )


def _load_gan(path: Path):
    from .train_scripts import load_gan

    return load_gan(path)


def _describer(path: Path):
    """images Float[B, 3, S, S] in [0, 1] -> per image the objects the attribute segmenter sees (loaded lazily)."""
    cache = {}

    def describe(images):
        from .dataset import describe_images
        from .train_scripts import load_segmenter

        if "seg" not in cache:
            cache["seg"] = load_segmenter(path)
        return describe_images(cache["seg"], images.float().cpu())[0]

    return describe


PROFILE_HELP = {
    "cpu": "narrow DaveNet (D=128) that learns within minutes on 2 CPU cores",
    "paper": "the paper's widths (D=512, VGG16 trunk, 3-pool audio net), SGD; for a GPU",
    "paper-large": "paper widths with the 7-conv, 5-pool audio net of the paper's code",
    "tiny": "tiny towers and short audio, for tests",
}
assert set(PROFILE_HELP) == set(PROFILES)
