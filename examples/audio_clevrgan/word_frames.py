"""Where each attribute word of a spoken caption lies, in the frames of its log-mel features.

A GAN edit that changes one attribute of one object falsifies the caption's word for that attribute's old value
and nothing else. With its span the trainer can push the edit away on those frames only (``anchor_span``, see
:class:`negmine.Negatives`), instead of on the whole caption, whose other words stay true of the edit (measured:
whole-caption edit negatives lower the kept colour, material and size words of the swapped object by 0.1-0.35
standard deviations beyond DaveNet's, benchmarks/results/edit_word_scores.md).

Times come from espeak-ng's word events while it speaks the caption with the pair's speaker, which gives the
caption's audio sample for sample (:func:`audio_clevrgan.speech.word_times`); a word lasts until the next one
starts. Frames are the features' 10 ms hops (frame = seconds x 100). Every training caption is spoken once, about
10 ms each (some 100 s for 10,000 captions on one thread), and kept in ``cache/`` beside the features.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .captions import WORD_TO_ATTRIBUTE

__all__ = ["attribute_word_frames", "cached_attribute_word_frames", "own_word_frames"]

FRAMES_PER_SECOND = 100  # the log-mel features' hop: 160 samples at 16 kHz


def attribute_word_frames(caption: str, speaker: str) -> list[tuple[str, str, int, int]]:
    """``(attribute, value, first frame, end frame)`` of each word of ``caption`` that names an attribute value
    (synonyms included: "block" names cube), in the order spoken; the end frame is where the next word starts."""
    from .speech import word_times

    duration, words = word_times(caption, speaker)
    out = []
    for k, (first, length, start) in enumerate(words):
        hit = WORD_TO_ATTRIBUTE.get(caption[first : first + length].strip(".,;:!?").lower())
        if hit is None:
            continue
        end = words[k + 1][2] if k + 1 < len(words) else duration
        lo = round(start * FRAMES_PER_SECOND)
        out.append((hit[0], hit[1], lo, max(lo + 1, round(end * FRAMES_PER_SECOND))))
    return out


def cached_attribute_word_frames(root: Path, rows: list[dict]) -> list[list[tuple[str, str, int, int]]]:
    """:func:`attribute_word_frames` of every row's ``caption`` and ``speaker``, read from (or written to)
    ``root/cache/word-frames-<key>.json``, keyed by the captions and speakers."""
    key = hashlib.sha256("\n".join(f"{r['speaker']}|{r['caption']}" for r in rows).encode()).hexdigest()[:16]
    path = Path(root) / "cache" / f"word-frames-{key}.json"
    if path.is_file():
        try:
            return [[tuple(w) for w in row] for row in json.loads(path.read_text())]
        except (OSError, ValueError):  # a torn cache file is rebuilt, never trusted
            pass
    frames = [attribute_word_frames(r["caption"], r["speaker"]) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(frames))
    tmp.replace(path)
    return frames


def own_word_frames(frames: list[tuple[str, str, int, int]], owners: list[int | None], attribute: str, value: str,
                    obj: int) -> tuple[int, int] | None:
    """``(first frame, end frame)`` of the first word naming ``attribute = value`` in object ``obj``'s own
    description: ``frames`` one caption's :func:`attribute_word_frames`, ``owners`` its
    :func:`audio_clevrgan.captions.attribute_word_owners` (one per word, in the same order); None where no such word
    is said, or where the two lists differ in length (espeak split the caption's words otherwise: none is trusted)."""
    if len(owners) != len(frames):
        return None
    return next(((lo, hi) for (a, v, lo, hi), owner in zip(frames, owners, strict=True)
                 if (a, v, owner) == (attribute, value, obj)), None)
