"""The Table 1 protocol with every word a caption may use, not only the canonical one.

The paper's Table 1 (and ``audio_clevrgan.evaluate.attribute_test``) speaks each value's own name alone: "cube",
"sphere", "large", "rubber", "metal". The training captions use CLEVR's synonyms as well ("block", "ball", "big",
"tiny", "matte", "metallic", "shiny"), so a canonical word may be heard in half or a third of the captions that name
its value, while a colour word or "cylinder" is heard in all of them. This script scores the same images with every
spoken form of every value (each spoken alone by every speaker of the dataset, as the semantic test's words are) and
prints each form's AUC beside the number of times the training captions say it, per method (runs grouped by their
parent directory), so one can see whether a value's canonical word lags because the concept is not learnt (every
form low) or because its word is rarely heard (the synonym high, the canonical word low).

The canonical forms are scored from the dataset's own ``semantic/*.wav`` recordings with the protocol's image sample
(500 images per side, seed 0), so their AUCs are the ledger's; each synonym is scored on its canonical word's images,
from recordings synthesized the same way and cached in ``<data>/cache/synonym-words/``::

    PYTHONPATH=examples OMP_NUM_THREADS=1 python benchmarks/synonym_words.py RUN_DIR [RUN_DIR ...] [--checkpoint best]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from audio_clevrgan.captions import SPOKEN_WORDS  # noqa: E402
from audio_clevrgan.evaluate import (  # noqa: E402
    _auc_summary,
    _encode_audio,
    _encode_images,
    pixel_thresholds,
    word_scores,
)
from negmine.evaluate import load_run  # noqa: E402
from negmine.experiment import machine_record  # noqa: E402
from negmine.plugins import get_plugin_manager  # noqa: E402


def spoken_forms() -> list[tuple[str, str, str]]:
    """(attribute, value, spoken form) for every form of every value, canonical first within a value."""
    return [(a, v, w) for a, values in SPOKEN_WORDS.items() for v, words in values.items() for w in words]


def word_rows(root: Path) -> tuple[list[dict], list[str]]:
    """Rows like ``semantic/words.jsonl``'s, one per (form, speaker): canonical forms point at the dataset's own
    recordings, synonyms at recordings synthesized here (once per dataset) by the same speakers; and the canonical
    words in the semantic test's order."""
    from audio_clevrgan.speech import synthesize, write_wav

    semantic = [json.loads(line) for line in (root / "semantic" / "words.jsonl").read_text().splitlines()]
    speakers = list(dict.fromkeys(r["speaker"] for r in semantic))
    have = {(r["word"], r["speaker"]): r["audio"] for r in semantic}
    cache = root / "cache" / "synonym-words"
    rows = []
    for attribute, value, word in spoken_forms():
        for speaker in speakers:
            audio = have.get((word, speaker))
            if audio is None:
                audio = f"cache/synonym-words/{word}-{speaker}.wav"
                if not (root / audio).is_file():
                    cache.mkdir(parents=True, exist_ok=True)
                    tmp = cache / f"{word}-{speaker}.tmp.wav"
                    write_wav(tmp, synthesize(word, speaker))
                    tmp.replace(root / audio)
            rows.append({"word": word, "attribute": attribute, "value": value, "speaker": speaker, "audio": audio})
    return rows, list(dict.fromkeys(r["word"] for r in semantic))


def caption_counts(rows: list[dict]) -> Counter:
    """How many times each word occurs in the captions of ``rows`` (a split's manifest rows)."""
    counts: Counter = Counter()
    for r in rows:
        counts.update(re.findall(r"[a-z]+", r.get("caption", "").lower()))
    return counts


@torch.no_grad()
def form_aucs(run: Path, checkpoint: str) -> tuple[dict[str, float | None], Counter]:
    """Each spoken form's Table 1 AUC for one run, and the word counts of its training captions."""
    task, _, _ = load_run(get_plugin_manager(), run, checkpoint, "cpu")
    model = task.model.eval()
    root = Path(task.resources["data_dir"])
    pad = task.resources.get("audio_pad", 0.0)
    words, canonical = word_rows(root)
    rows = task.test.rows
    images = _encode_images(model, [root / r["image"] for r in rows], torch.device("cpu"))
    scores = word_scores(model, images, words, lambda entries: _encode_audio(
        model, [root / e["audio"] for e in entries], torch.device("cpu"), pad))
    names = list(dict.fromkeys(w["word"] for w in words))
    thresholds = pixel_thresholds(int(task.resources["meta"]["image_size"]))
    # The protocol draws each word's images from one generator in the semantic test's word order, so a synonym is
    # scored in its canonical word's place: pass k replaces each canonical word by its k-th form (where it has one)
    # and draws the very images the protocol drew for that value; pass 0 is the ledger's own test.
    forms = {v: words_ for values in SPOKEN_WORDS.values() for v, words_ in values.items()}
    aucs: dict[str, float | None] = {}
    for k in range(max(len(f) for f in forms.values())):
        pass_names = [forms[c][k] if k < len(forms[c]) else c for c in canonical]
        summary = _auc_summary(scores[:, [names.index(n) for n in pass_names]], pass_names, words, rows,
                               thresholds, per_side=500, seed=0)
        for c, n in zip(canonical, pass_names, strict=True):
            if k < len(forms[c]):
                aucs[n] = summary["per_word"][n]["auc"]
    return aucs, caption_counts(task.train.rows)


def _cell(values: list[float]) -> str:
    if not values:
        return "n/a"
    v = 100 * np.asarray(values)
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v[0]:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories; grouped by their parent directory (method)")
    ap.add_argument("--checkpoint", default="best")
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    groups: dict[str, list[dict[str, float | None]]] = defaultdict(list)
    counts: Counter = Counter()
    for run in a.runs:
        aucs, counts = form_aucs(run, a.checkpoint)
        groups[run.parent.name].append(aucs)
        print(f"scored {run}", file=sys.stderr)
    methods = list(groups)
    print(f"Table 1 protocol with every spoken form (`python benchmarks/synonym_words.py {' '.join(map(str, a.runs))} "
          f"--checkpoint {a.checkpoint}`; commit {machine_record()['commit']}, {platform.machine()}, torch {torch.__version__}). "
          "AUC % (mean ± std over the runs of a method); captions: how often the training captions say the form.\n")
    print("| value | spoken form | captions | " + " | ".join(f"{m} ({len(groups[m])})" for m in methods) + " |")
    print("|---|---|---|" + "---|" * len(methods))
    for attribute, value, word in spoken_forms():
        cells = [_cell([g[word] for g in groups[m] if g.get(word) is not None]) for m in methods]
        print(f"| {attribute}: {value} | {word} | {counts[word]:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
