"""The evidence-location test: word spans in the caption audio, and the per-frame evidence split."""

from __future__ import annotations

import json

import torch

from audio_clevrgan.captions import WORD_TO_ATTRIBUTE
from audio_clevrgan.dataset import load_features
from audio_clevrgan.grounding import word_evidence, word_spans
from audio_clevrgan.task import build_task


def _rows(root):
    return [json.loads(line) for line in (root / "rendered" / "manifest.jsonl").read_text().splitlines()]


def test_word_spans_name_the_edited_value_inside_the_caption(acg_rendered):
    rows = _rows(acg_rendered)
    spans = word_spans(rows)
    assert any(s is not None for s in spans)
    for r, s in zip(rows, spans, strict=True):
        if s is None:
            continue
        i, lo, hi = s
        word = r["caption"].split()[i].strip(".,")
        assert WORD_TO_ATTRIBUTE[word] == (r["edit"]["attribute"], r["edit"]["old"])
        assert 0 <= lo < hi <= load_features(acg_rendered / r["audio"]).shape[1] + 5  # within the caption's audio


def test_evidence_split_and_shares(acg_rendered, monkeypatch):
    task = build_task("tiny", options={"data_dir": str(acg_rendered)})
    res = word_evidence(task.model, task, None, torch.device("cpu"))["per_attribute"]
    e = res["all"]
    assert e["n"] >= 1 and 0 < e["covered"] < 1
    for key in ("whole", "word", "other", "share"):
        assert 0.0 <= e[key] <= 1.0

    # evidence equal on every frame: both halves prefer the scene, and the word's share is its share of frames
    calls = {"n": 0}

    def flat(self, imgs, audio):
        calls["n"] += 1
        first = calls["n"] % 2 == 1  # the scene, then its edit
        return torch.full((len(imgs), 8, 8, audio.values.shape[-1]), 1.0 if first else 0.0)

    monkeypatch.setattr(type(task.model.score), "matchmap", flat)
    e = word_evidence(task.model, task, None, torch.device("cpu"))["per_attribute"]["all"]
    assert e["whole"] == e["word"] == 1.0
    assert abs(e["share"] - e["covered"]) < 1e-6


def test_word_learning_figure(acg_rendered, tmp_path):
    from PIL import Image

    from audio_clevrgan.figures import word_learning

    a = build_task("tiny", options={"data_dir": str(acg_rendered)})
    b = build_task("tiny", seed=1, options={"data_dir": str(acg_rendered)})
    out = word_learning([("A", a.model), ("B", b.model)], a, tmp_path / "words.png", ("cube", "red"), n_images=2)
    w, h = Image.open(out).size
    assert h > w / 2  # 4 rows (2 words x 2 models) of 4 tiles
    word_learning([("A", a.model)], a, tmp_path / "iso.png", ("metal",), n_images=1, context=False)
    assert (tmp_path / "iso.png").stat().st_size > 0
