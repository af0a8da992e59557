"""Where in the caption a model's evidence for an attribute sits: at the word that names it, or everywhere.

The rendered-scene test (a caption scored against its scene and the scene with one attribute of one object changed)
asks whether the *whole caption* tells the two apart; the Table 1 protocol asks whether an *isolated word* grounds
its attribute. A model can pass the first and fail the second when the frames of its audio tower carry the whole
utterance's content (a wide receptive field, and MISA's mean over frames, let every frame vote on everything).
This test separates the two on the same pairs. Per audio output frame t, MISA's frame score is
``s_t(I) = max over image regions of the matchmap``; the evidence at frame t for the true scene is
``d_t = s_t(scene) - s_t(edited scene)``. The frames of the word naming the changed attribute's old value (located
by speaking the caption's prefix alone with the same voice) are the *word frames*; the report gives, per edited
attribute, how often the word frames alone prefer the true scene (mean d over them > 0), how often the other frames
alone do, and the share of the total positive evidence that lies on the word frames against the share of frames
they cover. A model that grounds words concentrates its evidence on the word; a holistic one spreads it.

Run on finished runs (one table row per run)::

    PYTHONPATH=examples python -m audio_clevrgan.grounding runs/oracle-cpu/davenet/seed-0 \
        runs/oracle-cpu/oracle-edits/seed-0
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .captions import WORD_TO_ATTRIBUTE
from .dataset import load_features
from .evaluate import _cache_key, _encode_audio_features, _encode_images

__all__ = ["word_spans", "word_evidence"]


def _tokens(caption: str) -> list[str]:
    return caption.split()


def _bare(token: str) -> str:
    return token.strip(".,").lower()


def word_spans(rows: list[dict]) -> list[tuple[int, int, int] | None]:
    """For each rendered pair: (token index, frames of the caption up to the word, frames up to its end) of the one
    caption word naming the edited attribute's old value, in log-mel input frames; None when no word or several
    name it (a back-reference such as "the gray ball" repeats the value, and which mention the model uses is
    unknown). The frame counts come from speaking the prefix alone with the row's voice (espeak-ng), so they carry
    the prefix's final-word lengthening: an estimate good to a few input frames."""
    from .features import log_mel
    from .speech import synthesize

    @functools.cache
    def frames(text: str, speaker: str) -> int:
        return int(log_mel(synthesize(text, speaker)).shape[1]) if text else 0

    spans: list[tuple[int, int, int] | None] = []
    for r in rows:
        edit = r["edit"]
        toks = _tokens(r["caption"])
        hits = [i for i, t in enumerate(toks) if WORD_TO_ATTRIBUTE.get(_bare(t)) == (edit["attribute"], edit["old"])]
        if len(hits) != 1:
            spans.append(None)
            continue
        i = hits[0]
        start = frames(" ".join(toks[:i]), r["speaker"])
        end = frames(" ".join(toks[: i + 1]).rstrip(".,"), r["speaker"])
        spans.append((i, start, max(end, start + 1)))
    return spans


def _cached_spans(root: Path, rows: list[dict]) -> list[tuple[int, int, int] | None]:
    path = root / "cache" / f"word-spans-{_cache_key([json.dumps(r, sort_keys=True) for r in rows])}.json"
    if path.exists():
        return [tuple(s) if s is not None else None for s in json.loads(path.read_text())]
    spans = word_spans(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(spans))
    tmp.replace(path)
    return spans


@torch.no_grad()
def word_evidence(model: Any, task: Any, run_dir: Path | None, device: torch.device, split: str = "test",
                  margin: int = 0) -> dict[str, Any]:
    """The evidence-location test above on the dataset's rendered pairs (``rendered/manifest.jsonl``).

    margin: output frames added on each side of the word's frames. Returns per-attribute and overall figures
    (fractions in [0, 1]) and a markdown table."""
    model.eval()
    root = Path(task.resources["data_dir"])
    pad = task.resources.get("audio_pad", 0.0)
    rows = [json.loads(line) for line in (root / "rendered" / "manifest.jsonl").read_text().splitlines()]
    spans = _cached_spans(root, rows)
    total = len(rows)
    keep = [i for i, s in enumerate(spans) if s is not None]
    rows = [rows[i] for i in keep]
    spans = [spans[i] for i in keep]
    if not rows:
        return {"per_attribute": {"all": {"n": 0}},
                "markdown": f"Evidence location: none of the {total} rendered pairs has one caption word naming the "
                            "edited value."}
    stats: dict[str, dict[str, list[float]]] = {}
    for start in range(0, len(rows), 64):
        part, part_spans = rows[start : start + 64], spans[start : start + 64]
        feats = [load_features(root / r["audio"]) for r in part]
        audio = _encode_audio_features(model, feats, device, pad)
        ratio = max(f.shape[1] for f in feats) / audio.values.shape[-1]  # input frames per output frame

        def frame_scores(key: str) -> torch.Tensor:
            """Per-frame MISA, Float[n, T']: the max over image regions of the matchmap with the caption."""
            images = _encode_images(model, [root / r[key] for r in part], device)  # noqa: B023 (called at once)
            return model.score.matchmap(images, audio).flatten(1, -2).amax(1).cpu()  # noqa: B023

        d = frame_scores("image") - frame_scores("edited")
        for j, (r, (_, lo, hi)) in enumerate(zip(part, part_spans, strict=True)):
            n = int(audio.lengths[j])
            a = max(0, min(n - 1, int(lo // ratio) - margin))
            b = max(a + 1, min(n, int(np.ceil(hi / ratio)) + margin))
            dj = d[j, :n]
            word, other = dj[a:b], torch.cat([dj[:a], dj[b:]])
            positive = dj.clamp(min=0)
            entry = stats.setdefault(r["edit"]["attribute"], {k: [] for k in
                                                              ("whole", "word", "other", "share", "covered")})
            entry["whole"].append(float(dj.mean() > 0))
            entry["word"].append(float(word.mean() > 0))
            entry["other"].append(float(other.mean() > 0) if len(other) else float("nan"))
            entry["share"].append(float(positive[a:b].sum() / positive.sum()) if positive.sum() > 0 else 0.0)
            entry["covered"].append((b - a) / n)
    model.train()
    summary = {k: {m: float(np.nanmean(v)) for m, v in e.items()} | {"n": len(e["whole"])}
               for k, e in sorted(stats.items())}
    every = {m: [x for e in stats.values() for x in e[m]] for m in ("whole", "word", "other", "share", "covered")}
    summary["all"] = {m: float(np.nanmean(v)) for m, v in every.items()} | {"n": len(every["whole"])}
    md = [f"Evidence location on rendered pairs with one caption word naming the edited value ({summary['all']['n']} "
          f"of {total} pairs): per frame, "
          "d = MISA frame score of the scene minus that of its edit.", "",
          "| edited attribute | whole caption | word frames alone | other frames alone | share of evidence on "
          "the word | share of frames | pairs |", "|---|---|---|---|---|---|---|"]
    for k, e in summary.items():
        md.append(f"| {k} | {100 * e['whole']:.1f} | {100 * e['word']:.1f} | {100 * e['other']:.1f} | "
                  f"{100 * e['share']:.1f} | {100 * e['covered']:.1f} | {e['n']} |")
    return {"per_attribute": summary, "markdown": "\n".join(md)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from negmine.evaluate import load_run
    from negmine.plugins import get_plugin_manager

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--checkpoint", default="best")
    p.add_argument("--margin", type=int, default=0)
    p.add_argument("--details", action="store_true",
                   help="also print each run's per-attribute table and its attribute-test summary (Table 1 protocol)")
    a = p.parse_args(argv)
    pm = get_plugin_manager()
    print("| run | step | whole caption | word frames alone | other frames alone | evidence on the word | "
          "frames of the word | shape: word / other | material: word / other | pairs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    details = []
    for run in a.runs:
        task, _, state = load_run(pm, run, a.checkpoint)
        full = word_evidence(task.model, task, run, torch.device("cpu"), margin=a.margin)
        res = full["per_attribute"]
        e = res["all"]
        if a.details:
            from .evaluate import attribute_test

            attributes = attribute_test(task.model, task, run, torch.device("cpu"))["markdown"].split("\n\n")[-1]
            details.append(f"\n{run} (step {state.get('global_step')}):\n\n{full['markdown']}\n\n{attributes}")

        def pair(attr: str, res: dict = res) -> str:
            x = res.get(attr)
            return "n/a" if x is None else f"{100 * x['word']:.0f} / {100 * x['other']:.0f}"

        print(f"| {run} | {state.get('global_step')} | {100 * e['whole']:.1f} | {100 * e['word']:.1f} | "
              f"{100 * e['other']:.1f} | {100 * e['share']:.1f} | {100 * e['covered']:.1f} | {pair('shape')} | "
              f"{pair('material')} | {e['n']} |", flush=True)
    for text in details:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
