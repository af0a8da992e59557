"""The ``text-clevrgan`` task: written captions against the images of an Audio CLEVRGAN dataset.

It reads the same directory as ``audio-clevrgan`` (images, GAN latents, ``gan.pt``), so every GAN-edit generator
works on it unchanged: the generators only need the task's GAN, latents and dense maps on both sides. Side b is the
caption text of the manifest tokenised into words (Long[B, L] ids, lengths Long[B]).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import attrs
import numpy as np
import torch
from torch import Tensor

from audio_clevrgan.davenet import PROFILES as IMAGE_PROFILES
from audio_clevrgan.task import ImageSplit, dataset_capabilities, open_dataset
from negmine import Embedding, Task

from .model import TextImageModel, Vocabulary

OPTIONS = {
    "data_dir": ("data/audio-clevrgan", "dataset directory built by `negmine data build audio-clevrgan`"),
    "max_tokens": (48, "words per caption (longer captions are cut)"),
    "max_train": (0, "use at most this many training pairs (0: all)"),
}

PROFILE_HELP = {
    "cpu": "image tower of audio-clevrgan's cpu profile (D=128), 2-conv text tower; learns in minutes on 2 cores",
    "tiny": "tiny towers, for tests",
}

TASK_DEFAULTS = {
    "cpu": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-7, "batch_size": 64, "steps": 1000,
            "eval_every": 250, "eval_size": 500, "checkpoint_every": 100, "log_every": 20},
    "tiny": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 16, "steps": 20, "eval_size": 50,
             "checkpoint_every": 10, "log_every": 5},
}

TEXT_WIDTH = {"cpu": 128, "tiny": 16}


class TextSplit(ImageSplit):
    """Side b: token ids Long[N, L] and lengths Long[N] of the manifest's captions."""

    def __init__(self, root: Path, rows: list[dict], split: str, latents: np.ndarray | None, vocab: Vocabulary,
                 max_tokens: int) -> None:
        super().__init__(root, rows, split, latents)
        self.ids, self.lengths = vocab.encode([r["caption"] for r in self.rows], max_tokens)

    def side_b(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        return self.ids[ids], self.lengths[ids]


def build_task(profile: str = "cpu", seed: int = 0, options: dict | None = None) -> Task:
    """Load an Audio CLEVRGAN dataset's images and written captions and build the text–image model."""
    opts = {k: v[0] for k, v in OPTIONS.items()}
    opts.update(options or {})
    root = Path(opts["data_dir"])
    meta, rows, latents = open_dataset(root, int(opts["max_train"] or 0))
    # the vocabulary comes from training captions only; words first seen in val/test map to <unk>
    vocab = Vocabulary.from_texts(r["caption"] for r in rows if r["split"] == "train")
    max_tokens = int(opts["max_tokens"])
    splits = {s: TextSplit(root, rows, s, latents, vocab, max_tokens) for s in ("train", "val", "test")}
    torch.manual_seed(seed)
    image_cfg = attrs.evolve(IMAGE_PROFILES[profile], image_size=int(meta["image_size"]))
    model = TextImageModel(len(vocab), image_cfg, text_width=TEXT_WIDTH[profile])
    provides, resources = dataset_capabilities(root, meta, latents)
    resources["vocab"] = vocab
    from audio_clevrgan.evaluate import CONTEXT_PREFIX, attribute_test, word_frames

    def encode_word(entries: list[dict]) -> Embedding:
        ids, lengths = vocab.encode([entries[0]["word"]], max_tokens=1)
        device = next(model.parameters()).device
        return model.encode(1, (ids.to(device), lengths.to(device)))

    def encode_context(entries: list[dict]) -> Embedding:
        # the written word after the same carrier as the spoken test, scored on the word's own token map
        ids, lengths = vocab.encode([f"{CONTEXT_PREFIX} {entries[0]['word']}"], max_tokens=max_tokens)
        device = next(model.parameters()).device
        emb = model.encode(1, (ids.to(device), lengths.to(device)))
        return word_frames(emb, torch.tensor([len(CONTEXT_PREFIX.split())]))

    return Task(
        "text-clevrgan", model, splits["train"], splits["val"], splits["test"], frozenset(provides), resources,
        defaults=dict(TASK_DEFAULTS[profile]),
        evaluators={"attributes": partial(attribute_test, encode_word=encode_word, encode_context=encode_context)},
    )
