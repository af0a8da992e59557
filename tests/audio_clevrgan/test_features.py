"""DaveNet log-mel features against an independent numpy oracle; padding/cropping; WAV loading."""

import numpy as np
import pytest
import soundfile
import torch

from audio_clevrgan.features import (
    HOP_LENGTH,
    N_MELS,
    AudioFileError,
    load_wav,
    log_mel,
    log_mel_batch,
    mel_filterbank,
    num_frames,
    pad_or_crop,
)

SR = 16000


# ---------------------------------------------------------------- the oracle (float64 numpy, from formulas)


def hz_to_mel_slaney(f):
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep, f / f_sp)


def mel_to_hz_slaney(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_edges_hz(n_mels=40, fmin=20.0, fmax=8000.0):
    return mel_to_hz_slaney(np.linspace(hz_to_mel_slaney(fmin), hz_to_mel_slaney(fmax), n_mels + 2))


def oracle_filterbank(n_fft=400, n_mels=40):
    freqs = np.arange(n_fft // 2 + 1) * SR / n_fft
    edges = mel_edges_hz(n_mels)
    fb = np.zeros((n_mels, len(freqs)))
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        rising = (freqs - lo) / (mid - lo)
        falling = (hi - freqs) / (hi - mid)
        fb[i] = np.maximum(0.0, np.minimum(rising, falling)) * 2.0 / (hi - lo)  # Slaney area norm
    return fb


def oracle_log_mel(x, pad_mode="reflect"):
    y = np.asarray(x, dtype=np.float64)
    if y.dtype == np.int16:
        y = y / 32768.0
    y = y - y.mean()
    y = np.append(y[0], y[1:] - 0.97 * y[:-1])
    y = np.pad(y, 200, mode=pad_mode)
    n_frames = 1 + (len(y) - 400) // 160
    frames = np.stack([y[t * 160 : t * 160 + 400] for t in range(n_frames)])
    power = np.abs(np.fft.rfft(frames * np.hamming(400), n=400, axis=1)) ** 2  # (T, 201)
    mel = oracle_filterbank() @ power.T  # (40, T)
    db = 10 * np.log10(np.maximum(mel, 1e-10)) - 10 * np.log10(max(mel.max(), 1e-10))
    return np.maximum(db, db.max() - 80.0)


def speechlike(seconds=1.3, seed=0):
    """Noise through a moving resonance plus a gliding harmonic tone, with pauses: broad dynamic range."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 120 + 40 * np.sin(2 * np.pi * 1.5 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SR) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 2.2 * t), 0, None) ** 2
    noise = np.convolve(rng.standard_normal(n), np.hanning(9), mode="same") * (t > 0.8)
    x = 0.3 * voiced * envelope + 0.05 * noise + 1e-5 * rng.standard_normal(n) + 0.01  # + DC offset
    return x.astype(np.float32)


# ---------------------------------------------------------------- tests


def test_filterbank_matches_formula():
    fb = mel_filterbank().double().numpy()
    assert fb.shape == (N_MELS, 201)
    np.testing.assert_allclose(fb, oracle_filterbank(), atol=1e-5 * oracle_filterbank().max())  # float32


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_log_mel_matches_numpy_oracle(pad_mode):
    x = speechlike()
    got = log_mel(x, pad_mode=pad_mode)
    want = oracle_log_mel(x, pad_mode=pad_mode)
    assert got.dtype == torch.float32 and tuple(got.shape) == want.shape == (40, 1 + len(x) // 160)
    got = got.double().numpy()
    assert got.max() == 0.0 and got.min() >= -80.0
    loud = want > -50
    assert np.abs(got - want)[loud].max() < 1e-3  # float32 vs float64 (measured 5e-5 dB)
    assert np.abs(got - want).max() < 1e-2  # and everywhere, down to the -80 dB floor (measured 1e-3 dB)
    assert (want <= -79.999).sum() > 0  # the floor is exercised


def test_int16_and_float_inputs_agree_and_pad_mode_matters_only_at_edges():
    x = speechlike(seed=1)
    pcm = np.round(x * 32767).astype(np.int16)
    np.testing.assert_allclose(log_mel(pcm).numpy(), log_mel(pcm.astype(np.float32) / 32768).numpy(), atol=1e-4)
    np.testing.assert_allclose(log_mel(torch.from_numpy(x)).numpy(), log_mel(x).numpy())
    reflect, constant = log_mel(x, "reflect").numpy(), log_mel(x, "constant").numpy()
    np.testing.assert_allclose(reflect[:, 2:-2], constant[:, 2:-2], atol=1e-3)
    assert np.abs(reflect[:, 0] - constant[:, 0]).max() > 0.1


@pytest.mark.parametrize("band", [5, 12, 20, 30, 38])
def test_tone_peaks_in_its_mel_band(band):
    centre = mel_edges_hz()[band + 1]  # the band's centre frequency from the mel formula
    t = np.arange(SR // 2) / SR
    feats = log_mel(0.5 * np.sin(2 * np.pi * centre * t)).numpy()
    assert int(np.argmax(feats[:, 5:-5].mean(axis=1))) == band


def test_frame_count_dc_and_silence():
    for n in (0, 1, 159, 160, 161, 199, 200, 201, 399, 400, 16000, 16001):
        x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
        feats = log_mel(x)
        assert feats.shape == (40, num_frames(n)), n
        assert torch.isfinite(feats).all()
    assert num_frames(16000) == 101 and num_frames(0) == 2
    # A constant offset is removed: DC + signal == signal.
    x = speechlike(seed=2)
    np.testing.assert_allclose(log_mel(x + 0.2).numpy(), log_mel(x).numpy(), atol=1e-2)
    # Silence: every bin equals the max, i.e. 0 dB (as librosa's power_to_db gives).
    assert torch.equal(log_mel(np.zeros(3200, np.float32)), torch.zeros(40, 21))
    # Short signals are reflected like numpy/librosa do, even when shorter than the 200-sample pad.
    short = np.random.default_rng(9).standard_normal(120).astype(np.float32)
    np.testing.assert_allclose(log_mel(short).numpy(), oracle_log_mel(short), atol=0.05)


def test_batch_equals_one_by_one():
    waves = [speechlike(0.4, seed=3), speechlike(1.1, seed=4), np.zeros(0, np.float32), speechlike(0.7, seed=5)]
    batch, nframes = log_mel_batch(waves)
    assert batch.shape == (4, 40, int(nframes.max())) and nframes.dtype == torch.int64
    for b, w in enumerate(waves):
        single = log_mel(w)
        assert int(nframes[b]) == single.shape[1]
        np.testing.assert_allclose(batch[b, :, : nframes[b]].numpy(), single.numpy(), atol=1e-4)
        assert torch.all(batch[b, :, nframes[b]:] == 0)


def test_pad_or_crop():
    feats = torch.arange(40 * 30, dtype=torch.float32).reshape(40, 30) - 2000
    padded, n = pad_or_crop(feats, 50)
    assert padded.shape == (40, 50) and n == 30
    assert torch.equal(padded[:, :30], feats) and torch.all(padded[:, 30:] == 0)
    cropped, n = pad_or_crop(feats, 10)
    assert n == 10 and torch.equal(cropped, feats[:, :10])
    same, n = pad_or_crop(feats.numpy(), 30)
    assert n == 30 and torch.equal(same, feats)
    # Random crops: reproducible with a seeded generator, and every start 0..T-target is possible.
    a = [pad_or_crop(feats, 27, True, torch.Generator().manual_seed(7))[0] for _ in range(2)]
    assert torch.equal(a[0], a[1])
    gen = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(200):
        crop, n = pad_or_crop(feats, 27, random_crop=True, generator=gen)
        start = int(crop[0, 0] + 2000)
        assert n == 27 and torch.equal(crop, feats[:, start : start + 27])
        starts.add(start)
    assert starts == {0, 1, 2, 3}
    # No crop needed: random_crop changes nothing.
    assert torch.equal(pad_or_crop(feats, 40, True, gen)[0][:, :30], feats)
    with pytest.raises(ValueError):
        pad_or_crop(feats, 0)


def test_load_wav_reads_16k_and_names_the_file_on_errors(tmp_path):
    pcm = (np.sin(np.arange(1600) / 5) * 20000).astype(np.int16)
    good = tmp_path / "good.wav"
    soundfile.write(str(good), pcm, SR, subtype="PCM_16")
    x = load_wav(good)
    assert x.dtype == np.float32 and x.shape == (1600,)
    np.testing.assert_allclose(x, pcm / 32768.0, atol=1e-7)
    stereo = tmp_path / "stereo.wav"
    soundfile.write(str(stereo), np.stack([pcm, np.zeros_like(pcm)], axis=1), SR, subtype="PCM_16")
    np.testing.assert_allclose(load_wav(stereo), pcm / 65536.0, atol=1e-6)

    with pytest.raises(AudioFileError, match=r"missing\.wav: no such file") as info:
        load_wav(tmp_path / "missing.wav")
    assert info.value.path.endswith("missing.wav")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)))
    with pytest.raises(AudioFileError, match=r"corrupt\.wav: cannot decode audio"):
        load_wav(corrupt)
    fast = tmp_path / "fast.wav"
    soundfile.write(str(fast), pcm, 22050, subtype="PCM_16")
    with pytest.raises(AudioFileError, match=r"fast\.wav: sample rate is 22050 Hz but 16000 Hz is expected"):
        load_wav(fast)
    with pytest.raises(AudioFileError, match="directory"):
        load_wav(tmp_path)


def test_load_wav_refuses_a_truncated_file(tmp_path):
    """libsndfile reads a WAV cut short without complaint (issue 17, item 9)."""
    import soundfile

    path = tmp_path / "a.wav"
    soundfile.write(path, np.zeros(16000, dtype=np.int16), 16000, subtype="PCM_16")
    assert load_wav(path).shape == (16000,)
    whole = path.read_bytes()
    path.write_bytes(whole[:20000])
    with pytest.raises(AudioFileError, match=r"truncated: its header declares 32000 bytes of audio, the file holds "
                                             r"19956"):
        load_wav(path)


def test_hop_constant():
    assert HOP_LENGTH == 160
