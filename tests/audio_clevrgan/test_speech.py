"""espeak-ng speech: determinism, speakers, resampling, WAV output, and the missing-dependency error."""

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile

from audio_clevrgan import speech
from audio_clevrgan.speech import (
    NATIVE_SAMPLE_RATE,
    SAMPLE_RATE,
    SPEAKERS,
    Speaker,
    SpeechError,
    SpeechUnavailableError,
    Synthesizer,
    get_speaker,
    resample_to_16k,
    synthesize,
    write_wav,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def synth():
    pytest.importorskip("espeakng_loader")
    return Synthesizer.instance()


def digest(a):
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()


def dominant_frequency(x, sr):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * sr / len(x)


# ---------------------------------------------------------------- without espeak-ng


def test_missing_espeak_raises_with_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # makes `import espeakng_loader` fail
    monkeypatch.setattr(Synthesizer, "_instance", None)
    with pytest.raises(SpeechUnavailableError, match=r"pip install 'negmine\[speech\]'"):
        synthesize("hello", 0)
    assert issubclass(SpeechUnavailableError, ImportError)


def test_speaker_panel_and_lookup():
    assert len(SPEAKERS) >= 8
    assert len({s.name for s in SPEAKERS}) == len(SPEAKERS)
    assert len({(s.voice, s.rate, s.pitch) for s in SPEAKERS}) == len(SPEAKERS)
    assert get_speaker("us_f3") is get_speaker(1) is SPEAKERS[1]
    custom = Speaker("me", "en", 120, 30)
    assert get_speaker(custom) is custom
    with pytest.raises(ValueError, match="unknown speaker"):
        get_speaker("nobody")
    with pytest.raises(ValueError, match="out of range"):
        get_speaker(len(SPEAKERS))


def test_resample_keeps_pitch_and_matches_torchaudio_functional():
    import torch
    import torchaudio.functional as AF

    t = np.arange(NATIVE_SAMPLE_RATE) / NATIVE_SAMPLE_RATE  # 1 s
    pcm = np.round(12000 * np.sin(2 * np.pi * 440.0 * t)).astype(np.int16)
    out = resample_to_16k(pcm)
    assert out.dtype == np.int16 and out.shape == (SAMPLE_RATE,)
    assert abs(dominant_frequency(out.astype(float), SAMPLE_RATE) - 440.0) <= 1.0
    reference = AF.resample(torch.from_numpy(pcm.astype(np.float32) / 32768), NATIVE_SAMPLE_RATE, SAMPLE_RATE)
    reference = np.clip(np.round(reference.numpy() * 32768), -32768, 32767)
    assert np.max(np.abs(out.astype(float) - reference)) <= 1.0
    with pytest.raises(ValueError, match="int16"):
        resample_to_16k(pcm.astype(np.float32))


def test_write_wav_is_16k_pcm16(tmp_path):
    pcm = (np.arange(-1000, 1000, dtype=np.int32) * 16).astype(np.int16)
    path = tmp_path / "x.wav"
    write_wav(path, pcm)
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
    back, sr = soundfile.read(str(path), dtype="int16")
    assert sr == 16000 and np.array_equal(back, pcm)
    with pytest.raises(ValueError, match="int16"):
        write_wav(tmp_path / "y.wav", pcm.astype(np.float32))


# ---------------------------------------------------------------- with espeak-ng


def test_speech_is_real_audio(synth):
    audio = synth.synthesize("there is a small red metal sphere", "us_m")
    assert audio.dtype == np.int16 and audio.ndim == 1
    seconds = len(audio) / SAMPLE_RATE
    assert 1.0 < seconds < 4.0, seconds
    assert np.abs(audio).max() > 3000  # not silence
    # 16 kHz output is the 22.05 kHz output resampled.
    native = synth.synthesize_native("there is a small red metal sphere", "us_m")
    assert len(audio) == int(np.ceil(len(native) * SAMPLE_RATE / NATIVE_SAMPLE_RATE))
    # A longer text takes longer to say.
    longer = synth.synthesize("there is a small red metal sphere behind a large gray rubber cube", "us_m")
    assert len(longer) > 1.5 * len(audio)


def test_word_times_follow_the_text_and_match_a_prefix_spoken_alone(synth):
    text = "there is a tiny green metallic sphere behind a big cube."
    duration, words = synth.word_times(text, "us_m")
    assert duration == pytest.approx(len(synth.synthesize_native(text, "us_m")) / NATIVE_SAMPLE_RATE)
    spoken = [text[first : first + n] for first, n, _ in words]
    assert spoken == text.rstrip(".").split()
    starts = [t for _, _, t in words]
    assert starts[0] == pytest.approx(0.0, abs=0.05) and starts == sorted(starts) and starts[-1] < duration
    # a word starts about where the prefix before it, spoken alone, ends (its final lengthening aside)
    k = spoken.index("sphere")
    prefix = synth.synthesize_native(" ".join(spoken[:k]), "us_m")
    assert starts[k] == pytest.approx(len(prefix) / NATIVE_SAMPLE_RATE, abs=0.25)


def test_same_text_and_speaker_give_identical_samples(synth):
    text = "a big shiny cyan cylinder"
    first = synth.synthesize(text, "gb_f2")
    synth.synthesize("something else entirely, to disturb any hidden state", "us_f3")
    synth.synthesize_native("and once more", "nyc_m7")
    again = synth.synthesize(text, "gb_f2")
    assert np.array_equal(first, again)


def test_identical_across_processes(synth):
    text = "a tiny matte purple block"
    here = digest(synth.synthesize_native(text, "scot_f4"))
    code = (
        "import hashlib, numpy as np\n"
        "from audio_clevrgan.speech import Synthesizer\n"
        "s = Synthesizer.instance()\n"
        "s.synthesize_native('warm up with other words', 'us_m')\n"
        f"a = s.synthesize_native({text!r}, 'scot_f4')\n"
        "print(hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(EXAMPLES) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == here


def test_every_speaker_works_and_sounds_different(synth):
    clips = {s.name: synth.synthesize_native("cube", s) for s in SPEAKERS}
    assert all(len(c) > 0.2 * NATIVE_SAMPLE_RATE for c in clips.values())
    assert len({digest(c) for c in clips.values()}) == len(SPEAKERS)


def test_threads_get_the_same_audio_as_sequential_calls(synth):
    jobs = [("red ball", "us_m"), ("blue block", "gb_f2"), ("green cylinder", "rp_m1"), ("yellow cube", "carib_f5")]
    expected = [synth.synthesize_native(text, spk) for text, spk in jobs]
    results = [None] * len(jobs)

    def work(k):
        results[k] = synth.synthesize_native(*jobs[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected, strict=True):
        assert np.array_equal(got, want)


def test_bad_voices_and_text_raise(synth):
    with pytest.raises(SpeechError, match="'en-zz'.*not found"):
        synth.synthesize("hello", Speaker("bad", "en-zz", 150, 50))
    with pytest.raises(SpeechError, match="unknown espeak-ng voice variant 'nosuch'"):
        synth.synthesize("hello", Speaker("bad", "en+nosuch", 150, 50))
    with pytest.raises(ValueError, match="non-empty"):
        synth.synthesize("   ", 0)
    # "en-gb" is espeak-ng's "en" voice under its language tag.
    assert np.array_equal(synth.synthesize_native("hello", Speaker("a", "en-gb+f2", 150, 50)),
                          synth.synthesize_native("hello", Speaker("b", "en+f2", 150, 50)))
    # The synthesizer still works after errors.
    assert len(synth.synthesize("hello", 0)) > 0


def test_module_level_synthesize_uses_the_process_synthesizer(synth):
    assert Synthesizer.instance() is synth
    assert np.array_equal(speech.synthesize("gray", 3), synth.synthesize("gray", SPEAKERS[3]))
