"""Audio CLEVRGAN on disk: build it deterministically from a seed, and load it with validation.

Layout of a dataset directory::

    dataset.json        format version, seed, source, checkpoint SHA-256s, feature parameters, split counts
    build.json          what built it: package versions, Python, CPU, negmine's commit (not part of the content)
    manifest.jsonl      one pair per line: id, split, image, audio, latent_row, speaker, caption, objects, pixels
    latents.npy         Float32[N, Z] GAN latents (source "gan" only); manifest rows point into it
    images/NNNNNN.png   64x64 (or 128x128) RGB
    audio/NNNNNN.wav    16 kHz mono int16 spoken caption
    semantic/words.jsonl + semantic/<word>-<speaker>.wav   isolated spoken attribute words (Table 1)
    rendered/manifest.jsonl + rendered/*.png + rendered/*.wav  rendered scenes, single-attribute edits, captions (§6.5)

Determinism: every chunk of items is generated from ``np.random.default_rng([seed, chunk])`` only, so chunks can be
built in any order and an interrupted build resumes by skipping finished chunks (their rows are kept in
``.progress/``); files carry no timestamps, and the result is byte-identical to an uninterrupted build on the same
machine. Caption text and objects are for evaluation and display only; the model sees images and audio.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from negmine.errors import DataError

from .vocab import ATTRIBUTES, VALUES

FORMAT_VERSION = 1
CHUNK = 256  # items per chunk; part of the format: each chunk draws from its own seeded generator
SAMPLE_RATE = 16000
FEATURES = {
    "sample_rate": SAMPLE_RATE,
    "pre_emphasis": 0.97,
    "window": "hamming (symmetric)",
    "window_ms": 25,
    "hop_ms": 10,
    "n_mels": 40,
    "f_min": 20,
    "f_max": 8000,
    "log": "dB relative to the utterance maximum, floored at -80",
}


def split_sizes(n: int) -> dict[str, int]:
    """Test 1000 and val 500 at full size (n >= 10k); 10% and 5% of smaller datasets (at least 1 each)."""
    test = min(1000, max(1, n // 10))
    val = min(500, max(1, n // 20))
    if test + val >= n:
        raise DataError(f"--n {n} is too small: need more than {test + val} pairs for test/val/train splits")
    return {"test": test, "val": val, "train": n - test - val}


def split_of(index: int, sizes: dict[str, int]) -> str:
    if index < sizes["test"]:
        return "test"
    if index < sizes["test"] + sizes["val"]:
        return "val"
    return "train"


def sha256(path: str | Path) -> str:
    return _hash_file(hashlib.sha256(), path).hexdigest()


def _hash_file(digest: Any, path: str | Path) -> Any:
    """``digest`` updated with the file's bytes, read in 1 MiB blocks."""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest


# derived files (feature caches, this digest's own cache), an unfinished build's state and the record of what built
# it (two builds by other commits or package versions can be byte-identical) are not the dataset
_NOT_CONTENT = ("cache", ".progress", "build.json")


def build_record() -> dict[str, Any]:
    """What a build ran on: the package versions that make its bytes (images, speech, features), Python, the CPU
    and negmine's commit. Written to ``build.json``; when two builds' digests differ, this says where to look."""
    import importlib.metadata
    import platform

    versions = {}
    for package in ("torch", "numpy", "pillow", "soundfile", "espeakng-loader", "scipy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    from negmine.experiment import machine_record

    return {"packages": versions, "python": platform.python_version(), **machine_record()}


def content_digest(root: str | Path) -> str:
    """The first 16 hex digits of a SHA-256 over every file of a built dataset (relative path, size and bytes, in
    path order; ``cache/``, ``.progress/`` and ``build.json`` left out): two builds train alike only if these agree.

    Hashing a full build (about 1.5 GB) takes seconds, so the result is kept in ``cache/content-digest.json`` with a
    stamp of every file's path, size and modification time, and read back while the stamp agrees."""
    root = Path(root)
    files = sorted((p.relative_to(root).as_posix(), p, p.stat()) for p in root.rglob("*")
                   if p.is_file() and p.relative_to(root).parts[0] not in _NOT_CONTENT)
    stamp = hashlib.sha256()
    for name, _, info in files:
        stamp.update(f"{name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    cache = root / "cache" / "content-digest.json"
    try:
        kept = json.loads(cache.read_text())
        if kept.get("stamp") == stamp.hexdigest() and isinstance(kept.get("digest"), str):
            return kept["digest"]
    except (OSError, ValueError, AttributeError):
        pass
    digest = hashlib.sha256()
    for name, path, info in files:
        digest.update(f"{name}\0{info.st_size}\0".encode())
        _hash_file(digest, path)
    short = digest.hexdigest()[:16]
    try:  # a read-only dataset is hashed again next time, nothing worse
        cache.parent.mkdir(exist_ok=True)
        _atomic_json(cache, {"stamp": stamp.hexdigest(), "digest": short})
    except OSError:
        pass
    return short


# --------------------------------------------------------------------------------------------------------------
# Image sources: where the images (and their symbolic description) come from
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SourceBatch:
    """m images with what was seen in them.

    images: UInt8[m, H, W, 3]; objects: per image a list of dicts (shape, color, material, size, x, y in [0, 1]
    image coordinates, pixels); pixels: per image {attribute value: pixel count}; latents: Float32[m, Z] or None;
    scenes: per image the renderer's scene as ``scene_to_dicts`` (rendered source only; lets the ``render-edit``
    oracle re-render single-attribute edits).
    """

    images: np.ndarray
    objects: list[list[dict]]
    pixels: list[dict[str, int]]
    latents: np.ndarray | None = None
    scenes: list[list[dict]] | None = None


def objects_from_labels(
    instances: torch.Tensor, attributes: torch.Tensor
) -> tuple[list[list[dict]], list[dict]]:
    """Objects and per-value pixel counts from label maps.

    instances: Long[B, H, W] (0 background, k object k); attributes: Long[B, 4, H, W] (0 background, i+1 value i).
    An object's attribute is the majority value over its pixels; x, y are its centroid in [0, 1].
    """
    b, h, w = instances.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    all_objects, all_pixels = [], []
    for i in range(b):
        objs = []
        for k in [int(v) for v in instances[i].unique() if v > 0]:
            mask = instances[i] == k
            count = int(mask.sum())
            obj: dict[str, Any] = {}
            for a, attr in enumerate(ATTRIBUTES):
                labels = attributes[i, a][mask]
                labels = labels[labels > 0]
                if labels.numel() == 0:
                    break
                obj[attr] = VALUES[attr][int(labels.mode().values) - 1]
            else:
                obj["x"] = round(float(xs[mask].mean()) / w, 4)
                obj["y"] = round(float(ys[mask].mean()) / h, 4)
                obj["pixels"] = count
                objs.append(obj)
        objs.sort(key=lambda o: (o["x"], o["y"]))
        pixels = {}
        for a, attr in enumerate(ATTRIBUTES):
            counts = torch.bincount(attributes[i, a].flatten(), minlength=len(VALUES[attr]) + 1)
            for v, value in enumerate(VALUES[attr]):
                pixels[value] = int(counts[v + 1])
        all_objects.append(objs)
        all_pixels.append(pixels)
    return all_objects, all_pixels


class RenderedSource:
    """Ground-truth rendered scenes (no GAN): the labels are exact. Used for tests and as an ablation."""

    name = "rendered"

    def __init__(self, image_size: int = 64, scene_profile: str = "cpu") -> None:
        from .render import SCENE_PROFILES

        self.image_size = image_size
        self.scene_cfg = SCENE_PROFILES[scene_profile]
        self.checkpoints: dict[str, str] = {}

    def generate(self, rng: np.random.Generator, m: int) -> SourceBatch:
        from .render import render_scenes, sample_scenes, scene_to_dicts, to_uint8

        scenes = sample_scenes(rng, m, self.scene_cfg)
        out = render_scenes(scenes, resolution=self.image_size)
        objects, pixels = objects_from_labels(out.instances, out.attributes)
        return SourceBatch(to_uint8(out.images), objects, pixels, scenes=[scene_to_dicts(s) for s in scenes])


def describe_images(segmenter: Any, images01: torch.Tensor) -> tuple[list[list[dict]], list[dict[str, int]]]:
    """What the attribute segmenter sees in images Float[B, 3, S, S] in [0, 1]: per image its objects (dicts with
    shape, color, material, size, x, y in [0, 1], pixels, confidence = the lowest attribute probability) and the
    pixel count of every attribute value over foreground pixels."""
    from .segmenter import segment_objects

    pred = segmenter.predict(images01)
    size = images01.shape[-1]
    objects = [
        [{**o.attributes, "x": round(o.centroid[0] / size, 4), "y": round(o.centroid[1] / size, 4),
          "pixels": o.pixel_count, "confidence": round(o.min_confidence, 4)} for o in image_objects]
        for image_objects in segment_objects(pred)
    ]
    fg = pred["foreground"][:, 1] > 0.5
    pixels = []
    for i in range(images01.shape[0]):
        counts = {}
        for attr in ATTRIBUTES:
            labels = pred[attr][i].argmax(0)[fg[i]]
            bins = torch.bincount(labels.flatten(), minlength=len(VALUES[attr]))
            counts.update({value: int(bins[k]) for k, value in enumerate(VALUES[attr])})
        pixels.append(counts)
    return objects, pixels


def concept_maps(segmenter: Any, images01: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """Where each attribute value is in images Float[B, 3, S, S] in [0, 1], as the attribute segmenter reads them:
    (the value names, every attribute's values in :data:`ATTRIBUTES` order, and Bool[B, K, S, S]: the foreground
    pixels whose most likely value of that attribute is that value). For the ``gan-targeted`` option
    ``concepts = "task"``, which dissects the GAN against these maps as GAN Dissection does with its segmenter."""
    pred = segmenter.predict(images01.float())
    fg = pred["foreground"][:, 1] > 0.5
    names, maps = [], []
    for attr in ATTRIBUTES:
        labels = pred[attr].argmax(1)
        for k, value in enumerate(VALUES[attr]):
            names.append(value)
            maps.append((labels == k) & fg)
    return names, torch.stack(maps, 1).cpu()


class GanSource:
    """GAN samples G(z), described by the attribute segmenter (as in the paper's synthetic dataset). Latents whose
    image shows no object are redrawn (from the same chunk generator, so the build stays deterministic)."""

    name = "gan"

    def __init__(self, gan_path: str | Path, segmenter_path: str | Path) -> None:
        from .train_scripts import load_gan, load_segmenter

        self.gan = load_gan(gan_path)
        self.segmenter = load_segmenter(segmenter_path)
        self.z_dim = int(self.gan.z_dim)
        self.image_size = int(self.gan.config.resolution)
        self.checkpoints = {"gan": str(gan_path), "segmenter": str(segmenter_path)}

    @torch.no_grad()
    def generate(self, rng: np.random.Generator, m: int) -> SourceBatch:
        latents = rng.standard_normal((m, self.z_dim)).astype(np.float32)
        images01 = (self.gan.generate(torch.from_numpy(latents)) + 1) / 2
        objects, pixels = describe_images(self.segmenter, images01)
        for _ in range(10):  # redraw only the latents whose image shows nothing
            empty = [i for i, objs in enumerate(objects) if not objs]
            if not empty:
                break
            latents[empty] = rng.standard_normal((len(empty), self.z_dim)).astype(np.float32)
            redrawn = (self.gan.generate(torch.from_numpy(latents[empty])) + 1) / 2
            new_objects, new_pixels = describe_images(self.segmenter, redrawn)
            images01[empty] = redrawn
            for k, i in enumerate(empty):
                objects[i], pixels[i] = new_objects[k], new_pixels[k]
        uint8 = (images01 * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return SourceBatch(uint8, objects, pixels, latents)


# --------------------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------------------


def _worker_init() -> None:
    torch.set_num_threads(1)


def _speak(job: tuple[str, int]) -> np.ndarray:
    from .speech import synthesize

    text, speaker = job
    return synthesize(text, speaker)


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, format="PNG", optimize=False, compress_level=6)


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


class Builder:
    """Builds a dataset directory chunk by chunk (see the module docstring for the layout and guarantees)."""

    def __init__(
        self,
        out: str | Path,
        n: int,
        seed: int,
        source: Any,
        workers: int = 2,
        compact: bool = True,
        n_rendered: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        from .speech import SPEAKERS

        self.out, self.n, self.seed, self.source = Path(out), n, seed, source
        self.workers, self.compact = max(1, workers), compact
        self.sizes = split_sizes(n)
        self.n_rendered = n_rendered if n_rendered is not None else min(500, max(10, n // 20))
        self.speakers = [s.name for s in SPEAKERS]
        self.progress = progress or (lambda done, total: None)

    def header(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "seed": self.seed,
            "n": self.n,
            "source": self.source.name,
            "image_size": None,  # filled after the first chunk
            "checkpoints": {
                k: {"file": Path(p).name, "sha256": sha256(p)} for k, p in self.source.checkpoints.items()
            },
            "features": FEATURES,
            "counts": self.sizes,
            "speakers": self.speakers,
            "compact_captions": self.compact,
            "n_rendered": self.n_rendered,
        }

    def build(self) -> Path:
        """Build (or resume building) the dataset; returns the directory."""
        header = self.header()
        progress_dir = self.out / ".progress"
        spec_path = progress_dir / "spec.json"
        if (self.out / "dataset.json").exists():
            existing = json.loads((self.out / "dataset.json").read_text())
            if {k: existing.get(k) for k in ("seed", "n", "source", "checkpoints")} == {
                k: header[k] for k in ("seed", "n", "source", "checkpoints")
            }:
                return self.out  # already complete
            raise DataError(f"{str(self.out)!r} already holds a different dataset; choose another --out")
        progress_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("images", "audio", "semantic", "rendered"):
            (self.out / sub).mkdir(exist_ok=True)
        if spec_path.exists():
            if json.loads(spec_path.read_text()) != header:
                raise DataError(
                    f"{str(self.out)!r} holds a partial build with other settings; remove it or use another --out"
                )
        else:
            _atomic_json(spec_path, header)
        n_chunks = -(-self.n // CHUNK)
        total = n_chunks + 2
        # spawned (not forked) workers: a fork after torch has started its thread pool can deadlock the children
        pool = (multiprocessing.get_context("spawn").Pool(self.workers, initializer=_worker_init)
                if self.workers > 1 else None)
        try:
            # pipelined: the speech of chunk c is synthesized by the workers while this process draws and
            # describes the images of chunk c + 1 (each chunk depends only on its own seed, so order is free)
            done, pending = 0, None
            todo = [c for c in range(n_chunks) if not (progress_dir / f"chunk-{c:05d}.json").exists()]
            done = n_chunks - len(todo)
            for c in todo + [None]:
                prepared = self._prepare_chunk(c) if c is not None else None
                if prepared is not None:
                    prepared["speech"] = (pool.map_async(_speak, prepared["jobs"], chunksize=8) if pool is not None
                                          else None)
                if pending is not None:
                    self._write_chunk(pending, progress_dir)
                    done += 1
                    self.progress(done, total)
                pending = prepared
            if not (progress_dir / "semantic.json").exists():
                _atomic_json(progress_dir / "semantic.json", self._build_semantic(pool))
            self.progress(done + 1, total)
            if not (progress_dir / "rendered.json").exists():
                _atomic_json(progress_dir / "rendered.json", self._build_rendered(pool))
            self.progress(total, total)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
        self._finish(n_chunks, header)
        return self.out

    def _speak_all(self, jobs: list[tuple[str, int]], pool: Any) -> list[np.ndarray]:
        return list(pool.imap(_speak, jobs, chunksize=8)) if pool is not None else [_speak(j) for j in jobs]

    def _prepare_chunk(self, c: int) -> dict[str, Any]:
        """Images, captions and speech jobs of chunk ``c`` (everything but the audio)."""
        from .captions import make_caption

        start, stop = c * CHUNK, min(self.n, (c + 1) * CHUNK)
        rng = np.random.default_rng([self.seed, c])
        batch = self.source.generate(rng, stop - start)
        rows, jobs = [], []
        for k, index in enumerate(range(start, stop)):
            objects = batch.objects[k]
            if objects:
                caption = make_caption([{key: o[key] for key in (*ATTRIBUTES, "x", "y")} for o in objects], rng,
                                       compact=self.compact).text
            else:
                caption = "there is nothing here"
            speaker = int(rng.integers(len(self.speakers)))
            jobs.append((caption, speaker))
            rows.append({
                "id": index,
                "split": split_of(index, self.sizes),
                "image": f"images/{index:06d}.png",
                "audio": f"audio/{index:06d}.wav",
                "latent_row": index if batch.latents is not None else None,
                "speaker": self.speakers[speaker],
                "caption": caption,
                "objects": objects,
                "pixels": batch.pixels[k],
                **({} if batch.scenes is None else {"scene": batch.scenes[k]}),
            })
        return {"chunk": c, "rows": rows, "jobs": jobs, "batch": batch}

    def _write_chunk(self, prepared: dict[str, Any], progress_dir: Path) -> None:
        """Wait for the chunk's speech, write its files, then its marker (the marker makes the chunk count as done)."""
        from .speech import write_wav

        speech = prepared["speech"]
        waves = speech.get() if speech is not None else [_speak(j) for j in prepared["jobs"]]
        batch, rows, c = prepared["batch"], prepared["rows"], prepared["chunk"]
        for k, row in enumerate(rows):
            _write_png(self.out / row["image"], batch.images[k])
            write_wav(self.out / row["audio"], waves[k], SAMPLE_RATE)
        if batch.latents is not None:
            np.save(progress_dir / f"latents-{c:05d}.npy", batch.latents)
        _atomic_json(progress_dir / f"chunk-{c:05d}.json", {"rows": rows, "image_size": int(batch.images.shape[1])})

    def _build_semantic(self, pool: Any) -> list[dict]:
        """Every attribute word spoken by every speaker (the isolated words of the paper's Table 1)."""
        from .captions import SEMANTIC_TEST_WORDS
        from .speech import write_wav

        jobs, rows = [], []
        for attribute, value, word in SEMANTIC_TEST_WORDS:
            for s, speaker in enumerate(self.speakers):
                jobs.append((word, s))
                rows.append(
                    {
                        "word": word,
                        "attribute": attribute,
                        "value": value,
                        "speaker": speaker,
                        "audio": f"semantic/{word}-{speaker}.wav",
                    }
                )
        for row, wave in zip(rows, self._speak_all(jobs, pool), strict=True):
            write_wav(self.out / row["audio"], wave, SAMPLE_RATE)
        return rows

    def _build_rendered(self, pool: Any) -> list[dict]:
        """Rendered scenes, each with a single-attribute edit, and the original's spoken caption (paper §6.5)."""
        from .captions import make_caption
        from .render import SCENE_PROFILES, random_edit, render_scenes, sample_scenes, to_uint8
        from .speech import write_wav

        rng = np.random.default_rng([self.seed, 10**6])
        size = getattr(self.source, "image_size", None) or 64
        scenes = sample_scenes(rng, self.n_rendered, SCENE_PROFILES["cpu"])
        edits = [random_edit(s, rng) for s in scenes]
        out = render_scenes(list(scenes) + [e[0] for e in edits], resolution=size)
        objects, _ = objects_from_labels(out.instances[: len(scenes)], out.attributes[: len(scenes)])
        images = to_uint8(out.images)
        rows, jobs = [], []
        for i, (_scene, (_, edit)) in enumerate(zip(scenes, edits, strict=True)):
            caption = make_caption(
                [{k: o[k] for k in (*ATTRIBUTES, "x", "y")} for o in objects[i]], rng, compact=self.compact
            ).text
            speaker = int(rng.integers(len(self.speakers)))
            jobs.append((caption, speaker))
            rows.append(
                {
                    "id": i,
                    "image": f"rendered/{i:05d}.png",
                    "edited": f"rendered/{i:05d}-edit.png",
                    "audio": f"rendered/{i:05d}.wav",
                    "caption": caption,
                    "speaker": self.speakers[speaker],
                    "edit": {
                        "object": edit.index,
                        "attribute": edit.attribute,
                        "old": edit.old,
                        "new": edit.new,
                    },
                }
            )
        for i, (row, wave) in enumerate(zip(rows, self._speak_all(jobs, pool), strict=True)):
            _write_png(self.out / row["image"], images[i])
            _write_png(self.out / row["edited"], images[len(scenes) + i])
            write_wav(self.out / row["audio"], wave, SAMPLE_RATE)
        return rows

    def _finish(self, n_chunks: int, header: dict[str, Any]) -> None:
        progress_dir = self.out / ".progress"
        rows, latents, size = [], [], None
        for c in range(n_chunks):
            chunk = json.loads((progress_dir / f"chunk-{c:05d}.json").read_text())
            rows += chunk["rows"]
            size = chunk["image_size"]
            lat = progress_dir / f"latents-{c:05d}.npy"
            if lat.exists():
                latents.append(np.load(lat))
        if latents:
            np.save(self.out / "latents.npy", np.concatenate(latents).astype(np.float32))
        _write_jsonl(self.out / "manifest.jsonl", rows)
        _write_jsonl(
            self.out / "semantic" / "words.jsonl", json.loads((progress_dir / "semantic.json").read_text())
        )
        _write_jsonl(
            self.out / "rendered" / "manifest.jsonl", json.loads((progress_dir / "rendered.json").read_text())
        )
        for name, ck in self.source.checkpoints.items():
            if not (self.out / f"{name}.pt").exists():
                shutil.copyfile(ck, self.out / f"{name}.pt")
        header = dict(header, image_size=size)
        _atomic_json(self.out / "build.json", build_record())
        # dataset.json last: its presence marks a complete build
        (self.out / "dataset.json").write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(progress_dir)


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------------------------


def read_dataset(root: str | Path, check_files: bool = True) -> tuple[dict, list[dict]]:
    """Read and validate ``dataset.json`` and ``manifest.jsonl``; missing or corrupt files raise DataError."""
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        hint = (
            " (an interrupted build: run the same build command again to finish it)"
            if (root / ".progress").exists()
            else ""
        )
        raise DataError(
            f"no Audio CLEVRGAN dataset at {str(root)!r}: {str(meta_path)!r} is missing{hint}. Build one with "
            f"`negmine data build audio-clevrgan --out {root} --n 2000 --seed 0`"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{str(meta_path)!r} is corrupt: {exc}") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{str(meta_path)!r} has format {meta.get('format_version')}, expected {FORMAT_VERSION}; rebuild it"
        )
    for name, info in (meta.get("checkpoints") or {}).items():
        path = root / f"{name}.pt"
        if not path.is_file():
            raise DataError(f"{str(path)!r} (the {name} checkpoint this dataset was built with) is missing")
        if sha256(path) != info["sha256"]:
            raise DataError(
                f"{str(path)!r} does not match the SHA-256 recorded in dataset.json (checkpoint changed)"
            )
    rows = []
    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        raise DataError(f"{str(manifest)!r} is missing")
    for line_no, line in enumerate(manifest.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{str(manifest)!r} line {line_no} is corrupt: {exc}") from exc
        problem = manifest_row_problem(row, latents=meta.get("source") != "rendered")
        if problem:
            raise DataError(f"{str(manifest)!r} line {line_no}: {problem}")
        rows.append(row)
    if len(rows) != meta["n"]:
        raise DataError(f"{str(manifest)!r} has {len(rows)} rows, dataset.json says {meta['n']}")
    if check_files:
        for row in rows:
            for key in ("image", "audio"):
                if not (root / row[key]).is_file():
                    raise DataError(f"{str(root / row[key])!r} is missing (manifest id {row['id']})")
    return meta, rows


SPLITS = ("train", "val", "test")


def manifest_row_problem(row: Any, latents: bool) -> str | None:
    """What is wrong with one manifest row, or None: the fields every loader reads (``id``, ``split``, ``image``,
    ``audio``, and ``latent_row`` on a GAN-built dataset) must be present with the right types, so that a broken
    line is named here instead of surfacing as a KeyError deep in a split."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    missing = [k for k in ("id", "split", "image", "audio") + (("latent_row",) if latents else ()) if k not in row]
    if missing:
        return f"field{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} missing"
    if not isinstance(row["id"], int) or isinstance(row["id"], bool):
        return f"field 'id' must be an integer, got {row['id']!r}"
    if row["split"] not in SPLITS:
        return f"field 'split' must be one of {', '.join(SPLITS)}, got {row['split']!r}"
    for key in ("image", "audio"):
        if not isinstance(row[key], str) or not row[key]:
            return f"field {key!r} must be a file name, got {row[key]!r}"
    if latents and (not isinstance(row["latent_row"], int) or isinstance(row["latent_row"], bool)):
        return f"field 'latent_row' must be an integer (a row of latents.npy), got {row['latent_row']!r}"
    return None


def load_image(path: str | Path) -> np.ndarray:
    """UInt8[H, W, 3] from a PNG; a clear error names a missing or corrupt file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {str(path)!r}: {exc}") from exc


def load_features(path: str | Path) -> torch.Tensor:
    """Float32[40, T] DaveNet log-mel features of a 16 kHz WAV (errors name the file)."""
    from .features import AudioFileError, load_wav, log_mel

    try:
        wave = load_wav(path, expected_sample_rate=SAMPLE_RATE)
    except AudioFileError as exc:
        raise DataError(str(exc)) from exc
    return torch.as_tensor(log_mel(wave))


def progress_printer(label: str) -> Callable[[int, int], None]:
    """A progress callback: a rich bar on a terminal, a line per step otherwise."""
    import sys

    start = time.perf_counter()

    def report(done: int, total: int) -> None:
        elapsed = time.perf_counter() - start
        eta = elapsed / max(done, 1) * (total - done)
        end = "\n" if done == total or not sys.stderr.isatty() else "\r"
        print(
            f"{label}: {done}/{total} ({elapsed:.0f}s elapsed, ~{eta:.0f}s left)",
            end=end,
            file=sys.stderr,
            flush=True,
        )

    return report

