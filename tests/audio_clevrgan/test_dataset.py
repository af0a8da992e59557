"""Audio CLEVRGAN on disk: determinism, resume, validation, and a tiny DaveNet run through the CLI."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from audio_clevrgan import dataset as ds  # noqa: E402
from negmine.errors import DataError  # noqa: E402


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "cache" not in p.parts}


@pytest.fixture
def built(acg_rendered):
    return acg_rendered


def test_layout_and_manifest(built):
    meta, rows = ds.read_dataset(built)
    assert meta["counts"] == {"test": 4, "val": 2, "train": 34}
    assert [r["id"] for r in rows] == list(range(40))
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    for r in rows[:5]:
        assert r["caption"] and r["objects"] and r["speaker"] in meta["speakers"]
        for o in r["objects"]:  # every object's four attribute words are in its caption (synonyms allowed)
            assert o["shape"] in r["caption"] or {"cube": "block", "sphere": "ball"}.get(o["shape"], "?") in r["caption"]
    import soundfile

    info = soundfile.info(built / rows[0]["audio"])
    assert info.samplerate == 16000 and info.subtype == "PCM_16"
    words = (built / "semantic" / "words.jsonl").read_text().splitlines()
    assert len(words) == 15 * len(meta["speakers"])
    assert len((built / "rendered" / "manifest.jsonl").read_text().splitlines()) == 6
    import torch

    record = json.loads((built / "build.json").read_text())
    assert record["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert {"numpy", "pillow", "soundfile", "espeakng-loader"} <= set(record["packages"]) and record["commit"]


def test_build_is_deterministic_and_resumable(built, tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "CHUNK", 16)
    reference = tmp_path / "ref"
    ds.Builder(reference, 40, 0, ds.RenderedSource(), workers=1, n_rendered=6).build()

    interrupted = tmp_path / "cut"

    def stop_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ds.Builder(interrupted, 40, 0, ds.RenderedSource(), workers=1, n_rendered=6, progress=stop_after_two).build()
    assert not (interrupted / "dataset.json").exists()
    with pytest.raises(DataError, match="interrupted build"):
        ds.read_dataset(interrupted)
    ds.Builder(interrupted, 40, 0, ds.RenderedSource(), workers=1, n_rendered=6).build()
    assert tree_digest(reference) == tree_digest(interrupted)


def test_another_seed_differs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ds.Builder(a, 20, 0, ds.RenderedSource(), workers=1, n_rendered=0).build()
    ds.Builder(b, 20, 1, ds.RenderedSource(), workers=1, n_rendered=0).build()
    assert (a / "images" / "000000.png").read_bytes() != (b / "images" / "000000.png").read_bytes()


def test_content_digest_names_the_bytes_and_is_kept_while_files_are_unchanged(built, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(built, copy, ignore=shutil.ignore_patterns("cache"))
    digest = ds.content_digest(copy)
    assert len(digest) == 16 and digest == ds.content_digest(built)  # content, not where or when it was written
    kept = copy / "cache" / "content-digest.json"
    # read back while every file's stamp agrees (shown by a planted value), not hashed again
    kept.write_text(json.dumps({**json.loads(kept.read_text()), "digest": "planted"}))
    assert ds.content_digest(copy) == "planted"
    (copy / "cache" / "features-extra.pt").write_bytes(b"derived")  # derived files are not the dataset
    (copy / "build.json").write_text("{}")  # nor the record of what built it
    assert ds.content_digest(copy) == "planted"
    # one changed byte of one image: another digest
    image = copy / "images" / "000000.png"
    raw = bytearray(image.read_bytes())
    raw[-1] ^= 1
    image.write_bytes(bytes(raw))
    changed = ds.content_digest(copy)
    assert changed not in (digest, "planted")
    image.write_bytes(bytes(raw[:-1]) + bytes([raw[-1] ^ 1]))
    assert ds.content_digest(copy) == digest


def test_validation_names_the_broken_file(built, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(built, broken)
    (broken / "audio" / "000003.wav").unlink()
    with pytest.raises(DataError, match="000003.wav"):
        ds.read_dataset(broken)
    (broken / "images" / "000005.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="000005.png"):
        ds.load_image(broken / "images" / "000005.png")
    import soundfile

    soundfile.write(broken / "audio" / "000003.wav", np.zeros(800, dtype=np.int16), 8000, subtype="PCM_16")
    with pytest.raises(DataError, match="000003.wav"):
        ds.load_features(broken / "audio" / "000003.wav")
    meta = json.loads((broken / "dataset.json").read_text())
    meta["checkpoints"] = {"gan": {"file": "gan.pt", "sha256": "0" * 64}}
    (broken / "dataset.json").write_text(json.dumps(meta))
    (broken / "gan.pt").write_bytes(b"x")
    with pytest.raises(DataError, match="SHA-256"):
        ds.read_dataset(broken)


def test_tiny_davenet_trains_and_evaluates(built, tmp_path, capsys):
    from negmine.cli import main

    run = tmp_path / "run"
    code = main(["train", "--task", "audio-clevrgan", "--profile", "tiny", "--task-option", f"data_dir={built}",
                 "-n", "random", "-n", "hard-minibatch", "--steps", "6", "--batch-size", "8", "--run-dir", str(run),
                 "-q"])
    assert code == 0
    assert main(["eval", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["retrieval"]["n"] == 4
    assert set(out["attributes"]["per_group"]) == {"shape", "material", "color", "size"}
    assert set(out["attributes"]["per_group_normalised"]) == {"shape", "material", "color", "size"}
    assert set(out["attributes"]["per_group_matched"]) == {"shape", "material", "color", "size"}
    for w in out["attributes"]["per_word"].values():
        assert (w["auc"] is None) == (w["auc_normalised"] is None)
        assert w["auc"] is not None or w["auc_matched"] is None
    assert 0.0 <= out["rendered"]["accuracy"] <= 1.0 and out["rendered"]["n"] == 6
    # the in-context variant: same words and images, its recordings synthesized once and cached in the dataset
    context = out["attributes"]["context"]
    assert set(context["per_word"]) == set(out["attributes"]["per_word"])
    assert [w["n_pos"] for w in context["per_word"].values()] == [
        w["n_pos"] for w in out["attributes"]["per_word"].values()]
    stamps = {p: p.stat().st_mtime_ns for p in (built / "cache").glob("context-words-*.pt")}
    assert stamps
    assert main(["eval", str(run), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["attributes"]["context"]
    assert again["per_word"] == context["per_word"]
    assert {p: p.stat().st_mtime_ns for p in (built / "cache").glob("context-words-*.pt")} == stamps


def test_context_recordings_start_after_the_carrier(built):
    from audio_clevrgan.evaluate import CONTEXT_PREFIX, context_recordings
    from audio_clevrgan.features import log_mel
    from audio_clevrgan.speech import synthesize

    words = [json.loads(line) for line in (built / "semantic" / "words.jsonl").read_text().splitlines()][:3]
    for entry, (feats, start) in zip(words, context_recordings(built, words), strict=True):
        alone = ds.load_features(built / entry["audio"])
        assert feats.shape[0] == 40 and start == log_mel(synthesize(CONTEXT_PREFIX, entry["speaker"])).shape[1]
        # the carrier phrase is longer than the word alone and the word's frames follow the prefix
        assert feats.shape[1] > start and feats.shape[1] > alone.shape[1]


def test_word_frames_matches_slicing():
    import torch

    from audio_clevrgan.evaluate import word_frames
    from negmine import Embedding

    values = torch.randn(3, 4, 7)
    lengths = torch.tensor([7, 5, 2])
    starts = torch.tensor([2, 0, 5])  # the last start is past the sequence: its final frame is kept
    out = word_frames(Embedding(values, lengths), starts)
    assert out.lengths.tolist() == [5, 5, 1]
    for i, (n, s) in enumerate([(7, 2), (5, 0), (2, 1)]):
        assert torch.equal(out.values[i, :, : n - s], values[i, :, s:n])
        assert not out.values[i, :, n - s :].any()


def test_missing_dataset_message(tmp_path, capsys):
    from negmine.cli import main

    code = main(["train", "--task", "audio-clevrgan", "--task-option", f"data_dir={tmp_path / 'nope'}",
                 "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "negmine data build audio-clevrgan" in err and "Traceback" not in err


def test_gan_dataset_and_drawn_negatives(acg_gan, tmp_path):
    """The paper's path on the committed GAN and segmenter: GAN images captioned from the segmenter, then DaveNet
    trained with random + GAN-edited negatives (positives regenerated from latents)."""
    from negmine.cli import main

    root = acg_gan
    meta, rows = ds.read_dataset(root)
    assert meta["source"] == "gan" and set(meta["checkpoints"]) == {"gan", "segmenter"}
    assert np.load(root / "latents.npy").shape == (24, 128)
    assert all(r["objects"] for r in rows)  # latents whose image shows nothing are redrawn
    run = tmp_path / "run"
    assert main(["train", "--task", "audio-clevrgan", "--profile", "tiny", "--task-option", f"data_dir={root}",
                 "-n", "random", "-n", "gan-random", "--steps", "2", "--batch-size", "8", "--run-dir", str(run),
                 "-q"]) == 0
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in line][-1]
    assert last["gan-random/side0/count"] == 8 and last["gan-random/tries_mean"] >= 1


def test_manifest_lines_missing_a_field_name_file_line_and_field(built, tmp_path):
    """Issue 17, item 9: a missing field was a KeyError traceback (or, for ``id``, accepted)."""
    for field, expected in [("audio", "field 'audio' missing"), ("image", "field 'image' missing"),
                            ("split", "field 'split' missing"), ("id", "field 'id' missing")]:
        broken = tmp_path / f"no-{field}"
        shutil.copytree(built, broken, ignore=shutil.ignore_patterns("cache"))
        lines = (broken / "manifest.jsonl").read_text().splitlines()
        row = json.loads(lines[6])
        del row[field]
        lines[6] = json.dumps(row)
        (broken / "manifest.jsonl").write_text("\n".join(lines) + "\n")
        with pytest.raises(DataError) as err:
            ds.read_dataset(broken)
        assert str(err.value) == f"{str(broken / 'manifest.jsonl')!r} line 7: {expected}"
    assert ds.manifest_row_problem({"id": 1, "split": "train", "image": "i.png", "audio": "a.wav"}, latents=True) == (
        "field 'latent_row' missing")
    assert "must be one of train, val, test" in ds.manifest_row_problem(
        {"id": 1, "split": "dev", "image": "i.png", "audio": "a.wav"}, latents=False)


def test_a_wav_truncated_after_its_features_were_cached_is_caught(built, tmp_path):
    """Issue 17, item 9: the cache was keyed by file names only, so training went on with the old features."""
    from audio_clevrgan.task import AudioClevrganSplit

    data = tmp_path / "data"
    shutil.copytree(built, data, ignore=shutil.ignore_patterns("cache"))
    _, rows = ds.read_dataset(data)
    first = AudioClevrganSplit(data, rows, "train", 256, None)
    assert list((data / "cache").glob("features-train-*.pt"))
    again = AudioClevrganSplit(data, rows, "train", 256, None)  # from the cache, unchanged
    assert torch_equal(first.feats, again.feats)
    victim = data / [r for r in rows if r["split"] == "train"][3]["audio"]
    whole = victim.read_bytes()
    victim.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=rf"{victim.name}.*truncated: its header declares \d+ bytes of audio"):
        AudioClevrganSplit(data, rows, "train", 256, None)
    victim.write_bytes(whole)  # restored (a new modification time): read again, the same features
    assert torch_equal(AudioClevrganSplit(data, rows, "train", 256, None).feats, first.feats)


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)
