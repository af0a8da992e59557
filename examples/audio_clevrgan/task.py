"""The ``audio-clevrgan`` negmine task: DaveNet on spoken captions of CLEVR-like images.

Side a is the image (UInt8[B, 3, S, S], converted to floats by the model), side b the audio: (Float[B, 1, 40, F]
log-mel features cropped or zero-padded to F frames, nframes Long[B]). Features are computed once with torchaudio
and cached next to the dataset (``cache/``), keyed by the frame count and each audio file's size and modification
time (a file that changed is read and validated again).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from negmine import Batch, PairedDataset, Task
from negmine.errors import DataError, UnknownNameError

from .dataset import content_digest, load_features, load_image, read_dataset
from .davenet import PROFILES, build_model, parse_overrides, parse_value

DEFAULT_DATA = "data/audio-clevrgan"

OPTIONS = {
    "data_dir": (DEFAULT_DATA, "dataset directory built by `negmine data build audio-clevrgan`"),
    "audio_frames": (None, "frames per caption (crop/pad); default 1024 (paper), 768 (cpu), 256 (tiny)"),
    "max_train": (0, "use at most this many training pairs (0: all)"),
    "audio_pad": (None, "log-mel value (dB) of padded frames: 0 is the paper code's quirk (0 dB is the loudest level), "
                        "-80 is silence; default 0 (paper profiles), -80 (cpu, tiny)"),
    "davenet": ("", "DaveNet config overrides, e.g. 'dim=256,image_relu=false,audio_widths=32/64/128/128'"),
    "group_by": ("none", "training pairs that are never negatives of each other: none (only the pair itself), or "
                         "content (captions naming the same objects: same multiset of size, colour, material, shape)"),
    "isolated_words": (0.0, "share of training pairs whose caption is replaced by one attribute word, spoken alone, "
                            "that names a value of one of the image's objects (the input of the Table 1 test); the "
                            "edit oracles then remove that value from the scene. 0: none"),
    "exclude_true_words": (False, "with isolated_words: a one-word pair is never a negative of a pair whose image holds "
                                  "the word's value, nor the other way round (else most impostors of a common value "
                                  "hold it: 70% of training images hold a given material); default false"),
    "still_true_captions": (False, "the edit generators' drop_still_true also reads the edits of full captions (every "
                                   "edit segmented: about 1.5 s more per step on one CPU thread); by default only "
                                   "one-word captions' edits are read (a fifth of them); default false"),
}
GROUP_BY_CHOICES = ("none", "content")
# what resources["edit_changes"] can read as changed in an edit (generator option keep_changes)
EDIT_CHANGE_KINDS = ("shape", "color", "material", "size", "removed", "added")

TASK_DEFAULTS = {
    "paper": {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-7, "batch_size": 32,
              "steps": 30000, "lr_decay": 0.1, "lr_decay_every": 10000, "eval_every": 2000, "eval_size": 500,
              "checkpoint_every": 500, "log_every": 50},
    # cpu: every in-batch impostor counts (random k=63, mean hinge: batch-all) -- chosen by measurement, see
    # docs/audio-clevrgan.md: one sampled impostor per anchor left the audio tower at chance after 500 steps.
    "cpu": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-7, "batch_size": 64, "steps": 1500,
            "lr_decay": 0.3, "lr_decay_every": 1000, "eval_every": 500, "eval_size": 500, "checkpoint_every": 100,
            "log_every": 20, "reduction": "mean", "generators": {"random": {"k": 63}}},
    "tiny": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 16, "steps": 20, "eval_size": 50,
             "checkpoint_every": 10, "log_every": 5},
}
TASK_DEFAULTS["paper-large"] = TASK_DEFAULTS["paper"]

# Per-profile defaults of task options left unset.
PROFILE_OPTIONS = {
    "paper": {"audio_frames": 1024, "audio_pad": 0.0},
    "paper-large": {"audio_frames": 1024, "audio_pad": 0.0},
    "cpu": {"audio_frames": 768, "audio_pad": 0.0},  # 768 frames hold 80% of captions whole
    "tiny": {"audio_frames": 256, "audio_pad": -80.0},
}


def pad_or_crop_batch(feats: Tensor, frames: int) -> tuple[Tensor, Tensor]:
    """Float[40, T] list -> (Float[N, 40, frames] zero-padded or cut to the first frames, nframes Long[N])."""
    out = torch.zeros(len(feats), 40, frames, dtype=torch.float16)
    lengths = torch.zeros(len(feats), dtype=torch.long)
    for i, f in enumerate(feats):
        t = min(frames, f.shape[1])
        out[i, :, :t] = f[:, :t].to(torch.float16)
        lengths[i] = t
    return out, lengths


def fill_padding(feats: Tensor, nframes: Tensor, value: float) -> Tensor:
    """Float[N, ..., F] features with every frame at index >= nframes[i] set to ``value`` (a new tensor)."""
    if value == 0.0:
        return feats
    pad = torch.arange(feats.shape[-1], device=feats.device) >= nframes.to(feats.device)[:, None]
    shape = (pad.shape[0],) + (1,) * (feats.dim() - 2) + (pad.shape[1],)
    return feats.masked_fill(pad.view(shape), value)


# (rate in words per minute, pitch) shifts of a speaker for the isolated training words: none is (0, 0), so no
# training word is a recording of the Table 1 test (spoken at the speaker's own rate and pitch).
_WORD_VARIANTS = ((-20, 6), (-8, -6), (8, 6), (20, -6))


class ImageSplit(PairedDataset):
    """One split of an Audio CLEVRGAN dataset held in memory, side a: images UInt8[N, 3, S, S] (and GAN latents
    Float[N, Z] when the dataset has them). Subclasses provide side b through ``side_b(ids)``."""

    def __init__(self, root: Path, rows: list[dict], split: str, latents: np.ndarray | None) -> None:
        self.root, self.split = root, split
        self.rows = [r for r in rows if r["split"] == split]
        if not self.rows:
            raise DataError(f"{str(root)!r} has no {split} pairs")
        self.images = torch.from_numpy(np.stack([load_image(root / r["image"]) for r in self.rows])).permute(0, 3, 1, 2)
        self.latents = None
        if latents is not None:
            self.latents = torch.from_numpy(latents[[r["latent_row"] for r in self.rows]])
        # the renderer's scenes (rendered datasets): what the ``render-edit`` oracle re-renders with one change
        self.scenes = [r["scene"] for r in self.rows] if all("scene" in r for r in self.rows) else None
        self.groups = None
        self.positive_fn = None
        self.isolated = None  # per pair (attribute, value, word) when its caption is one word: use_isolated_words
        self._claims = self._holds = None  # exclude_true_words: the value each one-word caption claims, held values

    def use_generated_positives(self, fn, cache_bytes: int = 2 << 30) -> None:
        """Serve side-a images as ``fn(latents)`` (Float[B, 3, S, S] in [0, 1]) instead of the stored PNGs, so that
        edited negatives and their positives both skip quantisation.

        The generator is fixed during training, so each item's image is computed once and kept (Float32, in memory;
        10k items of 64 x 64 take 0.5 GB) when the whole split fits in ``cache_bytes``: on a CPU one generator pass
        over a batch costs about twice a DaveNet step."""
        if self.latents is None:
            raise DataError(f"{str(self.root)!r} has no latents.npy: generated positives need a GAN-built dataset")
        self.positive_fn = fn
        fits = self.images.numel() * 4 <= cache_bytes  # Float32 copies of every image of the split
        self._positive_cache = torch.zeros(self.images.shape) if fits else None
        self._positive_cached = torch.zeros(len(self.rows), dtype=torch.bool)

    def _generated_positives(self, ids: Tensor) -> Tensor:
        if self._positive_cache is None:
            with torch.no_grad():
                return self.positive_fn(self.latents[ids]).float().cpu()
        missing = ids[~self._positive_cached[ids]].unique()
        if missing.numel():
            with torch.no_grad():
                self._positive_cache[missing] = self.positive_fn(self.latents[missing]).float().cpu()
            self._positive_cached[missing] = True
        return self._positive_cache[ids]

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, ids: Tensor) -> Batch:
        ids = ids.long().cpu()
        extras = {} if self.latents is None else {"latent": self.latents[ids]}
        groups = None if self.groups is None else self.groups[ids]
        return Batch(self.side_batch(0, ids), self.side_batch(1, ids), ids, groups, extras)

    def group_by_content(self) -> None:
        """Give pairs whose captions name the same objects one group id, so that no generator draws them as each
        other's negatives (a false negative: the caption describes both images equally well). Relations and object
        order are ignored: the content key is the sorted multiset of (size, colour, material, shape)."""
        keys: dict[tuple, int] = {}
        groups = []
        for row in self.rows:
            key = tuple(sorted((o["size"], o["color"], o["material"], o["shape"]) for o in row["objects"]))
            groups.append(keys.setdefault(key, len(keys)))
        self.groups = torch.tensor(groups, dtype=torch.long)

    def side_batch(self, side: int, ids: Tensor) -> Any:
        ids = ids.long().cpu()
        if side == 0:
            if self.positive_fn is not None:
                return self._generated_positives(ids)
            return self.images[ids]
        return self.side_b(ids)

    def side_b(self, ids: Tensor) -> Any:
        raise NotImplementedError


class AudioClevrganSplit(ImageSplit):
    """Side b: log-mel features Float16[N, 40, F] (cropped or padded to F frames) and nframes Long[N]."""

    def __init__(self, root: Path, rows: list[dict], split: str, frames: int, latents: np.ndarray | None,
                 audio_pad: float = 0.0) -> None:
        super().__init__(root, rows, split, latents)
        self.frames, self.audio_pad = frames, audio_pad
        self.feats, self.nframes = self._features()
        self._word_frames: list[list[tuple[str, str, int, int]]] | None = None  # edit_word_spans, read on first use

    def _features(self) -> tuple[Tensor, Tensor]:
        """(features Float16[N, 40, F], nframes Long[N]) of the split, from ``cache/`` where every file is as it was.

        The cache records each audio file's size and modification time; a file that changed since (rewritten, cut
        short, replaced) is read and validated again, and only those files are: a truncated WAV fails loudly
        instead of training on the features of the file it replaced."""
        key = hashlib.sha256(("|".join(r["audio"] for r in self.rows) + f"|{self.frames}").encode()).hexdigest()[:16]
        cache = self.root / "cache" / f"features-{self.split}-{self.frames}-{key}.pt"
        stats = self._file_stats()
        feats = nframes = None
        stale = torch.ones(len(self.rows), dtype=torch.bool)
        if cache.is_file():
            try:
                state = torch.load(cache, weights_only=True)
                if state["feats"].shape == (len(self.rows), 40, self.frames) and "stats" in state:
                    feats, nframes = state["feats"], state["nframes"]
                    stale = (state["stats"] != stats).any(1)
            except Exception:  # a torn cache file is rebuilt, never trusted
                feats = nframes = None
        if feats is None:
            feats = torch.zeros(len(self.rows), 40, self.frames, dtype=torch.float16)
            nframes = torch.zeros(len(self.rows), dtype=torch.long)
        if stale.any():
            todo = stale.nonzero().flatten().tolist()
            new_feats, new_frames = pad_or_crop_batch(
                [load_features(self.root / self.rows[i]["audio"]) for i in todo], self.frames)
            feats[todo], nframes[todo] = new_feats, new_frames
            cache.parent.mkdir(exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            torch.save({"feats": feats, "nframes": nframes, "stats": stats}, tmp)
            os.replace(tmp, cache)
        return feats, nframes

    def _file_stats(self) -> Tensor:
        """Long[N, 2]: (size in bytes, modification time in ns) of each row's audio file."""
        out = torch.zeros(len(self.rows), 2, dtype=torch.long)
        for i, row in enumerate(self.rows):
            try:
                st = os.stat(self.root / row["audio"])
            except OSError as exc:
                raise DataError(f"{str(self.root / row['audio'])!r} cannot be read (manifest id {row['id']}): "
                                f"{exc.strerror}") from None
            out[i, 0], out[i, 1] = st.st_size, st.st_mtime_ns
        return out

    def use_isolated_words(self, share: float, seed: int) -> int:
        """Replace the audio of about ``share`` of the split's pairs by one attribute word spoken alone, and return
        how many were replaced.

        Why: the paper's Table 1 scores images with an isolated spoken word, but every training caption is a
        sentence, so the test's input is unlike anything the audio tower saw (issue 16, part 1). A replaced pair's
        word names the value of one attribute (drawn uniformly) of one of its image's objects, with a synonym drawn
        as captions draw them, spoken by the pair's own speaker at a shifted rate and pitch (four variants, none the
        speaker's own, so the test's recordings never occur in training). Pairs and words are drawn from ``seed``
        alone. ``self.isolated[i]`` is (attribute, value, word) for a replaced pair i, else None; the edit oracles
        read it to remove the value from the scene. Recordings are cached in ``cache/isolated-words/``."""
        from .captions import spoken_words
        from .speech import get_speaker, synthesize, write_wav
        from .vocab import ATTRIBUTES

        rng = np.random.default_rng([seed, 0x150])
        chosen = np.flatnonzero(rng.random(len(self.rows)) < share)
        self.isolated = [None] * len(self.rows)
        cache = self.root / "cache" / "isolated-words"
        cache.mkdir(parents=True, exist_ok=True)
        feats: dict[str, Tensor] = {}
        todo, paths = [], []
        for i in chosen.tolist():
            objects = self.rows[i]["objects"]
            attribute = ATTRIBUTES[int(rng.integers(len(ATTRIBUTES)))]
            if not objects:  # nothing seen in the image (GAN data): the pair keeps its caption
                continue
            obj = objects[int(rng.integers(len(objects)))]
            words = spoken_words(attribute, obj[attribute])
            word = words[int(rng.integers(len(words)))]
            variant = int(rng.integers(len(_WORD_VARIANTS)))
            speaker = get_speaker(self.rows[i]["speaker"])
            path = cache / f"{word}-{speaker.name}-{variant}.wav"
            if str(path) not in feats:
                if not path.is_file():
                    rate, pitch = _WORD_VARIANTS[variant]
                    shifted = dataclasses.replace(speaker, rate=speaker.rate + rate, pitch=speaker.pitch + pitch)
                    tmp = path.with_suffix(f".{os.getpid()}.tmp.wav")
                    write_wav(tmp, synthesize(word, shifted))
                    os.replace(tmp, path)
                feats[str(path)] = load_features(path)
            self.isolated[i] = (attribute, obj[attribute], word)
            todo.append(i)
            paths.append(str(path))
        if todo:
            new_feats, new_frames = pad_or_crop_batch([feats[p] for p in paths], self.frames)
            self.feats[todo], self.nframes[todo] = new_feats, new_frames
        return len(todo)

    def exclude_true_words(self) -> int:
        """Mark as false negatives the pairs where one pair's isolated word is true of the other's image (read by
        the trainer through :meth:`false_negatives`); returns how many pairs have a one-word caption.

        Why: content groups exclude only captions naming the same objects, so the in-batch impostors of the word
        "metal" are images that mostly hold metal objects; the loss then pushes the word away from what it names."""
        from .vocab import ATTRIBUTES, VALUES

        if self.isolated is None:
            raise DataError("task option exclude_true_words needs isolated_words > 0")
        column = {(a, v): k for k, (a, v) in enumerate((a, v) for a in ATTRIBUTES for v in VALUES[a])}
        self._holds = torch.zeros(len(self.rows), len(column), dtype=torch.bool)  # Bool[N, V]: values in image i
        for i, row in enumerate(self.rows):
            for obj in row["objects"]:
                for a in ATTRIBUTES:
                    self._holds[i, column[(a, obj[a])]] = True
        self._claims = torch.tensor([-1 if w is None else column[(w[0], w[1])] for w in self.isolated])  # Long[N]
        return int((self._claims >= 0).sum())

    def false_negatives(self, ids: Tensor, candidate_ids: Tensor) -> Tensor | None:
        """Bool[B, N]: pair i's one word is true of candidate j's image, or candidate j's one word of pair i's image
        (one mask serves both sides); None unless :meth:`exclude_true_words` was called."""
        if self._claims is None:
            return None
        ids, candidate_ids = ids.long().cpu(), candidate_ids.long().cpu()
        mine, theirs = self._claims[ids], self._claims[candidate_ids]
        word_true_there = self._holds[candidate_ids][:, mine.clamp_min(0)].T & (mine >= 0)[:, None]
        their_word_true_here = self._holds[ids][:, theirs.clamp_min(0)] & (theirs >= 0)[None, :]
        return word_true_there | their_word_true_here

    def caption_still_true(self, ids: Tensor, images01: Tensor, describe: Any, captions: bool = False) -> Tensor:
        """Bool[M]: pair ``ids[k]``'s caption still describes ``images01[k]`` (Float[M, 3, S, S] in [0, 1], e.g. an
        edit of the pair's image), as the attribute segmenter reads it (``describe``: images -> objects per image).

        A one-word caption is still true when any object of the image holds its value; with ``captions``, a full
        caption when the segmenter reads the same objects as in the pair's own image (no attribute changed, none
        added or removed); without it full captions are not read (False: the segmenter runs on the one-word pairs'
        images alone, a fifth of them, as it costs about 45 ms per image on one CPU thread).
        Why: such an edit is a false negative. An edit changes one object, so the value of an isolated word
        ("metal") is usually still held by another object: measured on the GAN edits of scene-iso-excl-cpu.toml,
        61-88% of one-word anchors' edits still held their word, and 21-44% of full captions' edits changed nothing
        the segmenter reads (benchmarks/results/edit_false_negatives.md)."""
        from negmine_gan.export import describe_change

        ids = ids.long().cpu()
        one_word = torch.tensor([self.isolated is not None and self.isolated[i] is not None for i in ids.tolist()],
                                dtype=torch.bool)
        read = torch.ones_like(one_word) if captions else one_word
        still = torch.zeros(len(ids), dtype=torch.bool)
        if not read.any():
            return still
        images01 = images01[read.to(images01.device)]
        if not images01.is_floating_point():  # stored images (uint8) rather than generated ones
            images01 = images01.float() / 255
        for k, objects in zip(read.nonzero().flatten().tolist(), describe(images01), strict=True):
            i = int(ids[k])
            if one_word[k]:
                attribute, value, _ = self.isolated[i]
                still[k] = any(o[attribute] == value for o in objects)
            else:
                still[k] = not describe_change(self.rows[i]["objects"], objects)["changed"]
        return still

    def edit_changes(self, ids: Tensor, images01: Tensor, describe: Any) -> list[tuple[str, ...]]:
        """Per edit, what the attribute segmenter (``describe``) reads as changed between pair ``ids[k]``'s objects
        and ``images01[k]`` (Float[M, 3, S, S] in [0, 1], an edit of the pair's image): one name of
        :data:`EDIT_CHANGE_KINDS` per change, the attribute for an object's changed attribute, "removed" / "added"
        for an object that vanished or appeared (two objects whose shapes changed give "shape" twice, which
        ``keep_changes_mode = 'single'`` tells from one); empty when it reads no change. For the edit generators'
        ``keep_changes`` (e.g. only the edits that change a shape: the negatives of the oracle row that taught
        shape)."""
        from negmine_gan.export import describe_change

        ids = ids.long().cpu()
        if not images01.is_floating_point():
            images01 = images01.float() / 255
        out = []
        for i, objects in zip(ids.tolist(), describe(images01), strict=True):
            changes = describe_change(self.rows[i]["objects"], objects)["changes"]
            out.append(tuple(c.get("attribute") or c["change"] for c in changes))
        return out

    def edit_word_spans(self, ids: Tensor, images01: Tensor, describe: Any) -> Tensor:
        """Float[M, 2]: per edit ``images01[k]`` of pair ``ids[k]``'s image, the (start, end) of the caption word
        the edit falsifies, as fractions of the pair's audio frames (its valid length after cropping); NaN where
        there is no one such word. That word names the old value of the one attribute of one object the segmenter
        (``describe``) reads as changed, in that object's own description (:func:`attribute_word_owners`: the
        same value said of another object stays true; a later reference to the edited object repeats the word,
        and its first mention is taken). NaN where the segmenter reads no change, several, or an object added or
        removed; where the caption's phrases do not single out the edited object (an object alike in every
        attribute); and where the word lies beyond the crop. A one-word caption (task option ``isolated_words``)
        is its word: the whole anchor (0, 1) where no object of the edit holds the word's value any more, NaN where
        one still does. Word frames: :mod:`audio_clevrgan.word_frames` (cached on first use)."""
        from negmine_gan.export import describe_change

        from .captions import attribute_word_owners
        from .word_frames import cached_attribute_word_frames, own_word_frames

        if self._word_frames is None:
            self._word_frames = cached_attribute_word_frames(self.root, self.rows)
        ids = ids.long().cpu()
        if not images01.is_floating_point():
            images01 = images01.float() / 255
        spans = torch.full((len(ids), 2), float("nan"))
        for k, (i, objects) in enumerate(zip(ids.tolist(), describe(images01), strict=True)):
            if self.isolated is not None and self.isolated[i] is not None:
                attribute, value, _ = self.isolated[i]
                if not any(o[attribute] == value for o in objects):  # the one word, now false of the edit
                    spans[k, 0], spans[k, 1] = 0.0, 1.0
                continue
            changes = describe_change(self.rows[i]["objects"], objects)["changes"]
            if len(changes) != 1 or not changes[0].get("attribute"):
                continue
            change = changes[0]
            word = own_word_frames(self._word_frames[i], attribute_word_owners(self.rows[i]["caption"],
                                                                                self.rows[i]["objects"]),
                                   change["attribute"], change["old"], change["object"])
            length = int(self.nframes[i])
            if word is None or word[0] >= length:
                continue
            spans[k, 0], spans[k, 1] = word[0] / length, min(word[1], length) / length
        return spans

    def side_b(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        nframes = self.nframes[ids]
        return (fill_padding(self.feats[ids].unsqueeze(1).float(), nframes, self.audio_pad), nframes)


def open_dataset(root: Path, max_train: int = 0) -> tuple[dict, list[dict], np.ndarray | None]:
    """(dataset.json, manifest rows, latents Float[N_latents, Z] or None) of a built dataset, validated; with
    ``max_train`` only the first that many training rows are kept."""
    meta, rows = read_dataset(root)
    latents = np.load(root / "latents.npy") if (root / "latents.npy").is_file() else None
    if max_train:
        keep = {r["id"] for r in [r for r in rows if r["split"] == "train"][:max_train]}
        rows = [r for r in rows if r["split"] != "train" or r["id"] in keep]
    return meta, rows, latents


def dataset_capabilities(root: Path, meta: dict, latents: np.ndarray | None) -> tuple[set[str], dict[str, Any]]:
    """What a task over this dataset provides to generators (corpus, dense maps, latents, gan, scenes) and its
    resources (data_dir, meta, the GAN loader, the segmenter's image describer)."""
    provides = {"corpus", "dense_maps"}
    if meta.get("source") == "rendered":
        provides.add("scenes")
    resources: dict[str, Any] = {"data_dir": root, "meta": meta}
    if latents is not None:
        provides.add("latents")
        if (root / "gan.pt").is_file():
            provides.add("gan")
            resources["gan_path"] = root / "gan.pt"
            resources["gan_loader"] = lambda: _load_gan(root / "gan.pt")
    if (root / "segmenter.pt").is_file():
        resources["describe_images"] = _describer(root / "segmenter.pt")
        resources["concept_maps"] = _describer(root / "segmenter.pt", maps=True)
    return provides, resources


def build_task(profile: str = "cpu", seed: int = 0, options: dict | None = None) -> Task:
    """Load the dataset and build DaveNet for a profile (``cpu``, ``paper``, ``paper-large``, ``tiny``)."""
    opts = {k: v[0] for k, v in OPTIONS.items()}
    opts.update(options or {})
    root = Path(opts["data_dir"])
    frames = int(opts["audio_frames"] or PROFILE_OPTIONS[profile]["audio_frames"])
    audio_pad = float(PROFILE_OPTIONS[profile]["audio_pad"] if opts["audio_pad"] is None else opts["audio_pad"])
    try:
        overrides = parse_overrides(str(opts["davenet"] or ""))
    except ValueError as exc:
        raise DataError(f"task option davenet: {exc}") from None
    group_by = str(opts["group_by"] or "none")
    if group_by not in GROUP_BY_CHOICES:
        raise UnknownNameError("group_by value", group_by, GROUP_BY_CHOICES)
    meta, rows, latents = open_dataset(root, int(opts["max_train"] or 0))
    splits = {s: AudioClevrganSplit(root, rows, s, frames, latents, audio_pad) for s in ("train", "val", "test")}
    if group_by == "content":  # training only: evaluation keeps the paper's protocol (one correct item per query)
        splits["train"].group_by_content()
    try:
        isolated = float(opts["isolated_words"] or 0.0)
    except (TypeError, ValueError):
        isolated = -1.0
    if not 0.0 <= isolated <= 1.0:
        raise DataError(f"task option isolated_words: expected a share in [0, 1], got {opts['isolated_words']!r}")
    if isolated > 0:  # chosen from the dataset's seed, not the run's: every method of an experiment sees the same
        splits["train"].use_isolated_words(isolated, int(meta.get("seed", 0)))
    try:  # True from a TOML file, "true" from --task-option
        exclude = parse_value(str(opts["exclude_true_words"]).strip(), False)
    except ValueError:
        raise DataError(f"task option exclude_true_words: expected true or false, got {opts['exclude_true_words']!r}") from None
    if exclude:
        splits["train"].exclude_true_words()
    torch.manual_seed(seed)
    model = build_model(profile, image_size=int(meta["image_size"]), overrides=overrides)
    provides, resources = dataset_capabilities(root, meta, latents)
    resources["audio_pad"] = audio_pad
    if "describe_images" in resources:  # the edit generators' readers (drop_still_true, keep_changes, localize)
        describe = resources["describe_images"]
        try:
            captions = parse_value(str(opts["still_true_captions"]).strip(), False)
        except ValueError:
            raise DataError("task option still_true_captions: expected true or false, got "
                            f"{opts['still_true_captions']!r}") from None

        def split_resources(name: str) -> dict[str, Any]:
            """The readers of edits of pairs of split ``name`` (their ids index that split)."""
            split = splits[name]
            return {"caption_still_true": lambda ids, images: split.caption_still_true(ids, images, describe,
                                                                                      bool(captions)),
                    "edit_changes": lambda ids, images: split.edit_changes(ids, images, describe),
                    "edit_word_spans": lambda ids, images: split.edit_word_spans(ids, images, describe)}

        resources.update(split_resources("train"))
        resources["split_resources"] = split_resources  # negmine edits export --split val/test rebinds them
        resources["edit_change_kinds"] = EDIT_CHANGE_KINDS
    from .evaluate import attribute_test, rendered_test
    from .figures import figures
    from .grounding import word_evidence

    return Task(
        "audio-clevrgan", model, splits["train"], splits["val"], splits["test"], frozenset(provides), resources,
        defaults=dict(TASK_DEFAULTS[profile]),
        evaluators={"attributes": attribute_test, "rendered": rendered_test, "grounding": word_evidence,
                    "figures": figures},
        data_digest=lambda: content_digest(root),
    )


def _load_gan(path: Path):
    from .train_scripts import load_gan

    return load_gan(path)


def _describer(path: Path, maps: bool = False):
    """images Float[B, 3, S, S] in [0, 1] -> per image the objects the attribute segmenter sees, or with ``maps``
    (value names, Bool[B, K, S, S]: where each value is; :func:`audio_clevrgan.dataset.concept_maps`). The segmenter
    is loaded lazily, on the images' device: the edit generators read their edits during training.

    The objects read in the previous call are remembered by each image's bytes, so a generator that asks two
    questions of the same edits in one step (``drop_still_true`` and ``keep_changes``: two task resources, each
    reading its own copy of the images) runs the segmenter once per image (about 30 ms each on one loaded CPU thread)."""
    segmenters: dict[str, Any] = {}
    last_read: dict[bytes, Any] = {}  # image digest -> objects, for the images of the previous call only

    def segmenter(device: torch.device) -> Any:
        from .train_scripts import load_segmenter

        if str(device) not in segmenters:
            segmenter = load_segmenter(path, device)
            if torch.device(device).type == "cpu":
                # channels-last convolutions read 1.5x faster on one CPU thread, probabilities within 1e-5 of the
                # default layout (benchmarks/results/segmenter_layout.md); the builder keeps the default layout, so a
                # build's bytes do not change
                segmenter = segmenter.to(memory_format=torch.channels_last)
            segmenters[str(device)] = segmenter
        return segmenters[str(device)]

    def as_read(images: torch.Tensor) -> torch.Tensor:
        # in the layout of the segmenter's weights: a convolution follows its input's layout, so NCHW images
        # through NHWC weights would take the slow path
        return images.contiguous(memory_format=torch.channels_last) if images.device.type == "cpu" else images

    def describe(images):
        from .dataset import concept_maps, describe_images

        if maps:
            return concept_maps(segmenter(images.device), as_read(images.float()))
        images = images.float()
        host = images.detach().cpu().contiguous()
        keys = [hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest() for row in host]
        todo = [k for k, key in enumerate(keys) if key not in last_read]
        read = dict(zip((keys[k] for k in todo), describe_images(segmenter(images.device), as_read(images[todo]))[0],
                        strict=True)) if todo else {}
        objects = [read[key] if key in read else last_read[key] for key in keys]
        last_read.clear()
        last_read.update(zip(keys, objects, strict=True))
        return [[dict(o) for o in image] for image in objects]  # copies: a caller's change stays out of the memo

    return describe


PROFILE_HELP = {
    "cpu": "narrow DaveNet (D=128) that learns within minutes on 2 CPU cores",
    "paper": "the paper's widths (D=512, VGG16 trunk, 3-pool audio net), SGD; for a GPU",
    "paper-large": "paper widths with the 7-conv, 5-pool audio net of the paper's code",
    "tiny": "tiny towers and short audio, for tests",
}
assert set(PROFILE_HELP) == set(PROFILES)
