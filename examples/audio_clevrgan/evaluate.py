"""The paper's evaluations beyond recall: Table 1's attribute test and the rendered-scene test (§6.5)."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from negmine import Embedding

from .dataset import load_features, load_image
from .vocab import ATTRIBUTES

GROUP_ORDER = ("shape", "material", "color", "size")


def pixel_thresholds(image_size: int) -> dict[str, tuple[float, float, float]]:
    """(positive low, positive high, negative max) pixel counts per attribute, scaled from the paper's 128x128 GAN
    images: positives have (100, 700) pixels ((100, 20000) for sizes), negatives fewer than 10."""
    scale = (image_size / 128) ** 2
    default = (100 * scale, 700 * scale, 10 * scale)
    return {a: ((100 * scale, 20000 * scale, 10 * scale) if a == "size" else default) for a in ATTRIBUTES}


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """P(score of a positive > score of a negative) over all pairs, ties counting one half."""
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


def _encode_images(model: Any, paths: list[Path], device: torch.device, batch: int = 128) -> Embedding:
    parts = []
    for i in range(0, len(paths), batch):
        imgs = torch.from_numpy(np.stack([load_image(p) for p in paths[i : i + batch]])).permute(0, 3, 1, 2)
        parts.append(model.encode(0, imgs.to(device)))
    return Embedding.cat(parts)


def _encode_audio(model: Any, paths: list[Path], device: torch.device, pad: float = 0.0) -> Embedding:
    return _encode_audio_features(model, [load_features(p) for p in paths], device, pad)


def _encode_audio_features(model: Any, feats: list[torch.Tensor], device: torch.device, pad: float = 0.0) -> Embedding:
    """Float[40, T_i] log-mels -> the audio side's Embedding, padded to the longest with ``pad`` (dB)."""
    frames = max(f.shape[1] for f in feats)
    x = torch.full((len(feats), 1, 40, frames), float(pad))
    n = torch.tensor([f.shape[1] for f in feats])
    for i, f in enumerate(feats):
        x[i, 0, :, : f.shape[1]] = f
    return model.encode(1, (x.to(device), n.to(device)))


# The carrier of the in-context attribute test: the words every caption starts with ("there is a large ..."), so the
# attribute word is heard as in training (after speech, not after silence) and is scored on its own frames.
CONTEXT_PREFIX = "there is a"


def _cache_key(parts: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def context_recordings(root: Path, entries: list[dict]) -> list[tuple[torch.Tensor, int]]:
    """Each entry's word spoken in the carrier ``"there is a <word>."`` by the entry's speaker (offline espeak-ng),
    as (log-mel Float[40, T], the first frame after the carrier prefix). Synthesized once per dataset and cached in
    ``<root>/cache/context-words-<key>.pt`` (written atomically); the word start is the length of the prefix spoken
    alone by the same speaker."""
    from .features import log_mel
    from .speech import synthesize

    keys = [f"{e['word']}|{e['speaker']}" for e in entries]
    path = root / "cache" / f"context-words-{_cache_key([CONTEXT_PREFIX, *keys])}.pt"
    if path.exists():
        cached = torch.load(path, weights_only=True)
        return [(cached["features"][i], int(cached["starts"][i])) for i in range(len(keys))]
    out = [(log_mel(synthesize(f"{CONTEXT_PREFIX} {e['word']}.", e["speaker"])), _prefix_frames(e["speaker"]))
           for e in entries]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"features": [f for f, _ in out], "starts": [s for _, s in out]}, tmp)
    tmp.replace(path)
    return out


@functools.cache
def _prefix_frames(speaker: str) -> int:
    """Log-mel frames of the carrier prefix spoken alone by ``speaker`` (where its word starts)."""
    from .features import log_mel
    from .speech import synthesize

    return int(log_mel(synthesize(CONTEXT_PREFIX, speaker)).shape[1])


def word_frames(emb: Embedding, starts: torch.Tensor) -> Embedding:
    """Keep each sequence's frames from ``starts[i]`` on (shifted to the front; at least one frame is kept).

    emb: values Float[N, D, T] with lengths Long[N]; starts: Long[N] output-frame indices -> Embedding of the same
    shape whose lengths count the kept frames."""
    values, lengths = emb.values, emb.lengths
    kept = torch.zeros_like(values)
    new_lengths = torch.zeros_like(lengths)
    for i in range(len(emb)):
        n = int(lengths[i])
        s = min(int(starts[i]), n - 1)
        kept[i, :, : n - s] = values[i, :, s:n]
        new_lengths[i] = n - s
    return Embedding(kept, new_lengths)


def _spoken_word_encoder(model: Any, root: Path, device: torch.device, pad: float) -> Any:
    """``entries -> Embedding`` of the isolated recordings of ``semantic/words.jsonl`` rows."""
    def encode(entries: list[dict]) -> Embedding:
        return _encode_audio(model, [root / e["audio"] for e in entries], device, pad)

    return encode


def _spoken_context_encoder(model: Any, root: Path, device: torch.device, pad: float) -> Any:
    def encode(entries: list[dict]) -> Embedding:
        recordings = context_recordings(root, entries)
        feats = [f for f, _ in recordings]
        emb = _encode_audio_features(model, feats, device, pad)
        # input frames -> output frames: the audio tower's pooling ratio, read off this batch
        ratio = max(f.shape[1] for f in feats) / emb.values.shape[-1]
        starts = torch.tensor([int(s // ratio) for _, s in recordings])
        return word_frames(emb, starts)

    return encode


def word_scores(model: Any, images: Embedding, words: list[dict], encode: Any) -> torch.Tensor:
    """Float[N images, W words]: each word's mean score over its recordings (rows of ``words`` sharing ``"word"``,
    in order of first appearance), ``encode(entries) -> Embedding`` giving the recordings' encodings."""
    names = list(dict.fromkeys(w["word"] for w in words))
    scores = torch.zeros(len(images), len(names))
    for j, word in enumerate(names):
        entries = [w for w in words if w["word"] == word]
        scores[:, j] = model.score_matrix(images, encode(entries)).mean(1).cpu()
    return scores


def matched_auc(pos: torch.Tensor, neg: torch.Tensor, pos_counts: Sequence[int], neg_counts: Sequence[int]) -> float | None:
    """AUC over the (with, without) pairs whose images hold the same number of objects (ties count half), or None
    when no pair matches.

    An image "without" a value has, on average, fewer objects than one "with" it (each extra object is another
    chance to carry the value), so a score that follows the object count moves the plain AUC whatever the word;
    within pairs of equal counts it cannot. pos Float[P], neg Float[Q] with their images' object counts."""
    pos_c, neg_c = torch.as_tensor(list(pos_counts)), torch.as_tensor(list(neg_counts))
    same = pos_c[:, None] == neg_c[None, :]  # Bool[P, Q]
    if not same.any():
        return None
    diff = pos[:, None].float() - neg[None, :].float()
    wins = (diff > 0).float() + 0.5 * (diff == 0).float()
    return float(wins[same].mean())


def _auc_summary(scores: torch.Tensor, names: list[str], words: list[dict], rows: list[dict],
                 thresholds: dict[str, tuple[float, float, float]], per_side: int, seed: int) -> dict[str, Any]:
    """AUCs per word, per group and their mean, from scores Float[N images, W words]; also image-normalised (each
    image's mean score over the words subtracted first, which removes per-image offsets: an image with many or large
    objects scores high with every word) and count-matched (:func:`matched_auc`: only pairs of images with equal
    object counts); neither is the paper's protocol, both are reported beside it."""
    rng = np.random.default_rng(seed)
    normalised = scores - scores.mean(1, keepdim=True)
    counts = [len(r.get("objects") or []) for r in rows]
    per_word: dict[str, dict[str, Any]] = {}
    for j, word in enumerate(names):
        entry = next(w for w in words if w["word"] == word)
        attribute, value = entry["attribute"], entry["value"]
        lo, hi, neg_max = thresholds[attribute]
        pos_idx = [i for i, r in enumerate(rows) if lo < r["pixels"][value] < hi]
        neg_idx = [i for i, r in enumerate(rows) if r["pixels"][value] < neg_max]
        if not pos_idx or not neg_idx:
            per_word[word] = {"attribute": attribute, "value": value, "auc": None, "auc_normalised": None,
                              "auc_matched": None, "n_pos": len(pos_idx), "n_neg": len(neg_idx)}
            continue
        pos_idx = sorted(rng.choice(pos_idx, min(per_side, len(pos_idx)), replace=False).tolist())
        neg_idx = sorted(rng.choice(neg_idx, min(per_side, len(neg_idx)), replace=False).tolist())
        per_word[word] = {"attribute": attribute, "value": value,
                          "auc": auc(scores[pos_idx, j], scores[neg_idx, j]),
                          "auc_normalised": auc(normalised[pos_idx, j], normalised[neg_idx, j]),
                          "auc_matched": matched_auc(scores[pos_idx, j], scores[neg_idx, j],
                                                     [counts[i] for i in pos_idx], [counts[i] for i in neg_idx]),
                          "n_pos": len(pos_idx), "n_neg": len(neg_idx)}
    result: dict[str, Any] = {"per_word": per_word}
    for key, suffix in (("auc", ""), ("auc_normalised", "_normalised"), ("auc_matched", "_matched")):
        groups = {}
        for g in GROUP_ORDER:
            vals = [w[key] for w in per_word.values() if w["attribute"] == g and w[key] is not None]
            groups[g] = float(np.mean(vals)) if vals else None
        valid = [v for v in groups.values() if v is not None]
        result[f"per_group{suffix}"] = groups
        result[f"mean{suffix}"] = float(np.mean(valid)) if valid else None
    return result


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


@torch.no_grad()
def attribute_test(model: Any, task: Any, run_dir: Path, device: torch.device, split: str = "test",
                   per_side: int = 500, seed: int = 0, encode_word: Any = None, encode_context: Any = "spoken",
                   ) -> dict[str, Any]:
    """For each attribute word: AUC of the spoken word's score on images with the attribute vs without it.

    Images come from ``split``; an image "has" a value when the segmenter (or ground truth) labels between the
    scaled thresholds of pixels with it, and "lacks" it below the negative threshold. Each image's score is the mean
    MISA over every speaker's recording of the isolated word (the paper's Table 1 protocol; top-level keys). The
    same test is repeated with the word in context (key ``"context"``): spoken after the carrier "there is a", and
    scored on the frames from the word on, because an isolated word, heard after silence, is unlike anything in
    training. ``encode_word(entries) -> Embedding`` replaces the isolated recordings (``entries``: the word's rows
    of ``semantic/words.jsonl``), e.g. by the written word; ``encode_context(entries) -> Embedding`` replaces the
    in-context one (already cut to the word's frames), None skips it.
    """
    model.eval()
    root = Path(task.resources["data_dir"])
    pad = task.resources.get("audio_pad", 0.0)
    data = task.test if split == "test" else task.val
    rows = data.rows
    words = [json.loads(line) for line in (root / "semantic" / "words.jsonl").read_text().splitlines()]
    thresholds = pixel_thresholds(int(task.resources["meta"]["image_size"]))
    images = _encode_images(model, [root / r["image"] for r in rows], device)
    names = list(dict.fromkeys(w["word"] for w in words))
    if encode_word is None:
        encode_word = _spoken_word_encoder(model, root, device, pad)
    if encode_context == "spoken":
        encode_context = _spoken_context_encoder(model, root, device, pad)
    variants = {"isolated": encode_word, "context": encode_context}
    summaries = {}
    for variant, encode in variants.items():
        if encode is not None:
            scores = word_scores(model, images, words, encode)
            summaries[variant] = _auc_summary(scores, names, words, rows, thresholds, per_side, seed)
    result: dict[str, Any] = dict(summaries["isolated"])
    if "context" in summaries:
        result["context"] = summaries["context"]
    lines = ["| word | group | AUC | image-normalised AUC | equal object counts | in context | in context, normalised "
             "| images with / without |", "|---|---|---|---|---|---|---|---|"]
    context_words = summaries.get("context", {}).get("per_word", {})
    for word, w in result["per_word"].items():
        c = context_words.get(word, {})
        lines.append(f"| {word} | {w['attribute']} | {_pct(w['auc'])} | {_pct(w['auc_normalised'])} | "
                     f"{_pct(w.get('auc_matched'))} | {_pct(c.get('auc'))} | {_pct(c.get('auc_normalised'))} | {w['n_pos']} / {w['n_neg']} |")
    lines += ["", "| AUC | " + " | ".join(GROUP_ORDER) + " | mean |", "|" + "---|" * (len(GROUP_ORDER) + 2)]
    for variant, label in (("isolated", "isolated word (Table 1 protocol)"), ("context", "word in context")):
        if variant not in summaries:
            continue
        for suffix, tail in (("", ""), ("_normalised", ", image-normalised"), ("_matched", ", equal object counts")):
            s = summaries[variant]
            cells = [_pct(s[f"per_group{suffix}"][g]) for g in GROUP_ORDER]
            lines.append(f"| {label}{tail} | " + " | ".join(cells) + f" | {_pct(s[f'mean{suffix}'])} |")
    result["markdown"] = ("Attribute test (Table 1 protocol: % of with/without pairs ranked correctly by the isolated "
                          "spoken word; in context: the word spoken after \"there is a\" and scored on its own "
                          "frames; image-normalised: each image's mean score over all words subtracted first; equal object "
                          "counts: only with/without pairs of images holding as many objects):\n\n"
                          + "\n".join(lines))
    model.train()
    return result


@torch.no_grad()
def rendered_test(model: Any, task: Any, run_dir: Path, device: torch.device, split: str = "test") -> dict[str, Any]:
    """A caption of a rendered scene scored against the scene and its single-attribute edit; chance is 50%."""
    model.eval()
    root = Path(task.resources["data_dir"])
    rows = [json.loads(line) for line in (root / "rendered" / "manifest.jsonl").read_text().splitlines()]
    originals = _encode_images(model, [root / r["image"] for r in rows], device)
    edited = _encode_images(model, [root / r["edited"] for r in rows], device)
    correct: dict[str, list[float]] = {}
    for start in range(0, len(rows), 64):
        part = rows[start : start + 64]
        audio = _encode_audio(model, [root / r["audio"] for r in part], device, task.resources.get("audio_pad", 0.0))
        idx = slice(start, start + len(part))
        s_orig = model.score_pairs(originals[idx], audio)
        s_edit = model.score_pairs(edited[idx], audio)
        for r, a, b in zip(part, s_orig.tolist(), s_edit.tolist(), strict=True):
            correct.setdefault(r["edit"]["attribute"], []).append(1.0 if a > b else 0.5 if a == b else 0.0)
    per_attr = {k: float(np.mean(v)) for k, v in correct.items()}
    overall = float(np.mean([x for v in correct.values() for x in v]))
    md = [f"Rendered scenes vs their single-attribute edits ({len(rows)} pairs, chance 50%): "
          f"**{100 * overall:.1f}%**", "", "| edited attribute | accuracy | pairs |", "|---|---|---|"]
    md += [f"| {k} | {100 * per_attr[k]:.1f} | {len(correct[k])} |" for k in sorted(per_attr)]
    model.train()
    return {"accuracy": overall, "per_attribute": per_attr, "n": len(rows), "markdown": "\n".join(md)}
