"""`benchmarks/synonym_words.py`: the Table 1 protocol with every spoken form of every value."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile
import torch


@pytest.fixture
def bench(load_benchmark):
    return load_benchmark("synonym_words")


def test_canonical_forms_are_the_protocols_and_a_synonym_is_scored_on_its_words_images(bench, acg_rendered, tmp_path,
                                                                                     monkeypatch):
    """Oracle: with every synonym 'spoken' as its canonical word's own recording, each synonym's AUC is exactly its
    canonical word's, which is exactly ``attribute_test``'s (the ledger's) for the same checkpoint."""
    import audio_clevrgan.speech as speech
    from audio_clevrgan.captions import SPOKEN_WORDS
    from audio_clevrgan.evaluate import attribute_test
    from negmine.cli import main
    from negmine.evaluate import load_run
    from negmine.plugins import get_plugin_manager

    data = tmp_path / "data"
    shutil.copytree(acg_rendered, data)
    run = tmp_path / "run"
    assert main(["train", "--task", "audio-clevrgan", "--profile", "tiny", "--task-option", f"data_dir={data}",
                 "-n", "random", "--steps", "2", "--batch-size", "8", "--run-dir", str(run), "-q"]) == 0

    canonical_of = {w: v for values in SPOKEN_WORDS.values() for v, words in values.items() for w in words}
    monkeypatch.setattr(speech, "synthesize", lambda word, speaker: soundfile.read(
        data / "semantic" / f"{canonical_of[word]}-{speaker}.wav", dtype="int16")[0])
    aucs, counts = bench.form_aucs(run, "last")

    task, _, _ = load_run(get_plugin_manager(), run, "last", "cpu")
    truth = attribute_test(task.model, task, run, torch.device("cpu"), encode_context=None)["per_word"]
    scored = 0
    for _, value, word in bench.spoken_forms():
        assert aucs[word] == truth[value]["auc"], (word, aucs[word], truth[value]["auc"])
        scored += aucs[word] is not None
    assert scored >= 10  # the tiny test split still has images with and without most values
    assert len(list((data / "cache" / "synonym-words").glob("*.wav"))) == 7 * len(
        {p.stem.rsplit("-", 1)[1] for p in (data / "semantic").glob("cube-*.wav")})
    assert counts["cylinder"] > 0 and sum(counts[w] for w in ("cube", "block")) > 0
    assert np.isfinite(sum(v for v in aucs.values() if v is not None))
